/* Content page: live job logs (server-sent events), bundle activation and upload. */
"use strict";

(() => {
  const head = document.getElementById("content-head");
  if (!head) return;
  const guid = head.dataset.guid;

  Podium.handlers.gone = () => { window.location.assign("/connect/"); };

  /* --- Logs pane: follow a job's log through GET .../jobs/{key}/tail (SSE) --- */
  let source = null;

  function follow(key) {
    const log = document.getElementById("job-log");
    const status = document.getElementById("job-log-status");
    if (source) source.close();
    log.textContent = "";
    document.querySelectorAll("tr[data-job]").forEach((row) => {
      row.classList.toggle("selected", row.dataset.job === key);
    });
    const row = document.querySelector(`tr[data-job="${CSS.escape(key)}"]`);
    const active = row && row.dataset.active === "1";
    status.textContent = active ? `Following ${key}…` : `Log of ${key}:`;
    source = new EventSource(`/__api__/v1/content/${guid}/jobs/${encodeURIComponent(key)}/tail`);
    let lines = 0;
    source.onmessage = (event) => {
      const entry = JSON.parse(event.data);
      const stamp = entry.timestamp ? entry.timestamp.replace("T", " ").replace("Z", "") + "  " : "";
      Podium.appendLine(log, stamp + entry.data, entry.source);
      lines += 1;
    };
    source.addEventListener("end", () => {
      source.close();
      status.textContent = `${key} has ended (${lines} line${lines === 1 ? "" : "s"}).`;
    });
    source.onerror = () => {
      // The stream closes when a job has no log yet or the server restarts: do not retry forever.
      source.close();
      if (!lines) status.textContent = `${key} has no log to show yet.`;
      else status.textContent = `The log stream of ${key} closed; choose the job again to reconnect.`;
    };
  }

  document.querySelectorAll("button[data-follow]").forEach((button) => {
    button.addEventListener("click", () => follow(button.dataset.follow));
  });
  const rows = [...document.querySelectorAll("tr[data-job]")];
  if (rows.length) {
    const preferred = rows.find((r) => r.dataset.active === "1" && r.dataset.kind === "run")
      || rows.find((r) => r.dataset.active === "1") || rows[0];
    follow(preferred.dataset.job);
  }
  window.addEventListener("pagehide", () => { if (source) source.close(); });

  /* --- Bundles pane: activate (rollback) or upload and deploy --- */
  const deployLog = document.getElementById("deploy-log");
  const deployStatus = document.getElementById("deploy-status");

  async function deployAndReport(bundleId, what) {
    deployLog.hidden = false;
    deployLog.textContent = "";
    deployStatus.classList.remove("error");
    deployStatus.textContent = `${what}: deploying bundle ${bundleId}…`;
    const task = await Podium.deploy(guid, bundleId, deployLog);
    if (task.code === 0 && !task.error) {
      deployStatus.textContent = `Bundle ${bundleId} is deployed and active.`;
      setTimeout(() => window.location.reload(), 1200);
    } else {
      throw new Podium.ApiError(`The deploy failed: ${task.error || "see the output above"}`, 0, 0);
    }
  }

  function reportError(err) {
    deployStatus.textContent = err.message;
    deployStatus.classList.add("error");
    deployStatus.setAttribute("role", "alert");
  }

  document.querySelectorAll("button[data-activate]").forEach((button) => {
    button.addEventListener("click", async () => {
      const id = button.dataset.activate;
      if (!window.confirm(`Activate bundle ${id}? Viewers will see it once it is deployed.`)) return;
      button.disabled = true;
      try { await deployAndReport(id, "Rollback"); } catch (err) { reportError(err); }
      button.disabled = false;
    });
  });

  /* --- Repository pane: deploy the branch's newest commit; make a webhook secret --- */
  const gitUpdate = document.getElementById("git-update");
  if (gitUpdate) {
    gitUpdate.addEventListener("click", async () => {
      gitUpdate.disabled = true;
      deployLog.hidden = false;
      deployLog.textContent = "";
      deployStatus.classList.remove("error");
      deployStatus.textContent = "Fetching the repository…";
      try {
        const started = await Podium.request("POST", `v1/content/${guid}/deploy`, { bundle_id: null });
        const task = await Podium.followTask(started.task_id, deployLog);
        if (task.code === 0 && !task.error) {
          deployStatus.textContent = "Deployed the newest commit.";
          setTimeout(() => window.location.reload(), 1200);
        } else {
          throw new Podium.ApiError(`The update failed: ${task.error || "see the output above"} The previous bundle keeps serving.`, 0, 0);
        }
      } catch (err) { reportError(err); }
      gitUpdate.disabled = false;
    });
  }
  const webhookSecret = document.getElementById("webhook-secret");
  if (webhookSecret) {
    webhookSecret.addEventListener("click", async () => {
      const status = document.getElementById("webhook-status");
      try {
        const made = await Podium.request("POST", `v1/content/${guid}/repository/webhook`);
        status.textContent = "";
        status.append("Secret (shown this once; copy it into the webhook settings): ");
        const code = document.createElement("code");
        code.id = "webhook-secret-value";
        code.textContent = made.secret;
        status.append(code);
        status.classList.remove("error");
      } catch (err) {
        status.textContent = err.message;
        status.classList.add("error");
      }
    });
  }

  const renderNow = document.getElementById("render-now");
  if (renderNow) {
    renderNow.addEventListener("click", async () => {
      renderNow.disabled = true;
      deployLog.hidden = false;
      deployLog.textContent = "";
      deployStatus.classList.remove("error");
      deployStatus.textContent = "Rendering…";
      try {
        const started = await Podium.request("POST", `v1/content/${guid}/render`);
        const task = await Podium.followTask(started.task_id, deployLog);
        if (task.code === 0 && !task.error) {
          deployStatus.textContent = "Rendered: viewers now see the new output.";
          setTimeout(() => window.location.reload(), 1200);
        } else {
          throw new Podium.ApiError(`The render failed: ${task.error || "see the output above"}`, 0, 0);
        }
      } catch (err) { reportError(err); }
      renderNow.disabled = false;
    });
  }

  /* --- Renderings pane: the render schedule (Connect's v0 schedule calls) --- */
  const scheduleForm = document.getElementById("schedule-form");
  if (scheduleForm) {
    const type = scheduleForm.querySelector("#schedule-type");
    const zone = scheduleForm.querySelector("#schedule-zone");
    const start = scheduleForm.querySelector("#schedule-start");
    const local = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    // The time is typed as a wall-clock time in the chosen zone: offered are this
    // browser's zone (converted by the browser) and UTC.
    for (const name of new Set([local, "UTC"])) zone.add(new Option(name, name));
    if (scheduleForm.dataset.timezone === "UTC") zone.value = "UTC";
    const pad = (n) => String(n).padStart(2, "0");
    const shown = (date, utc) => utc
      ? `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}T${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}`
      : `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
    const first = scheduleForm.dataset.start ? new Date(scheduleForm.dataset.start) : new Date(Date.now() + 3600e3);
    start.value = shown(first, zone.value === "UTC");
    const sync = () => {
      scheduleForm.querySelector("#schedule-n-field").hidden = ["weekday", "dayofweek"].includes(type.value);
      scheduleForm.querySelector("#schedule-days").hidden = type.value !== "dayofweek";
    };
    type.addEventListener("change", sync);
    sync();

    const scheduleId = scheduleForm.dataset.scheduleId;
    scheduleForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      let rule = {};
      if (type.value === "dayofweek") {
        rule = { Days: [...scheduleForm.querySelectorAll("input[name=day]:checked")].map((b) => Number(b.value)) };
      } else if (type.value !== "weekday") {
        rule = { N: Number(scheduleForm.querySelector("#schedule-n").value) };
      }
      const when = zone.value === "UTC" ? new Date(start.value + ":00Z") : new Date(start.value);
      if (Number.isNaN(when.getTime())) {
        Podium.say(scheduleForm, "Give the date and time of the first run.", true);
        return;
      }
      const id = Number(scheduleForm.dataset.contentId);
      const body = { app_id: id, variant_id: id, type: type.value, schedule: JSON.stringify(rule),
        start_time: when.toISOString(), timezone: zone.value };
      try {
        await Podium.request("POST", scheduleId ? `schedules/${scheduleId}` : "schedules", body);
        Podium.say(scheduleForm, "Schedule saved.", false);
        setTimeout(() => window.location.reload(), 800);
      } catch (err) { Podium.say(scheduleForm, err.message, true); }
    });
    const remove = document.getElementById("schedule-remove");
    if (remove) {
      remove.addEventListener("click", async () => {
        if (!window.confirm("Remove the schedule? The document keeps its renderings.")) return;
        try {
          await Podium.request("DELETE", `schedules/${scheduleId}`);
          window.location.reload();
        } catch (err) { Podium.say(scheduleForm, err.message, true); }
      });
    }
  }

  const upload = document.getElementById("upload-form");
  if (upload) {
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = upload.querySelector("input[type=file]").files[0];
      if (!file) return;
      const button = upload.querySelector("button");
      button.disabled = true;
      deployLog.hidden = false;
      deployStatus.textContent = `Uploading ${file.name}…`;
      try {
        const bundle = await Podium.request("POST", `v1/content/${guid}/bundles`, file,
          { raw: true, contentType: "application/gzip" });
        await deployAndReport(bundle.id, "Upload");
      } catch (err) { reportError(err); }
      button.disabled = false;
    });
  }
})();
