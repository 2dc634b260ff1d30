/* Publish page: create content (or pick one), upload the archive, deploy, follow the task. */
"use strict";

(() => {
  const form = document.getElementById("publish-form");
  if (!form) return;
  const target = form.querySelector("#target");
  const newFields = document.getElementById("new-fields");
  const status = document.getElementById("publish-status");
  const log = document.getElementById("publish-log");
  const done = document.getElementById("publish-done");

  function sync() {
    const isNew = target.value === "";
    newFields.hidden = !isNew;
    form.querySelector("#name").required = isNew;
  }
  target.addEventListener("change", sync);
  sync();

  function report(message, isError) {
    status.textContent = message;
    status.classList.toggle("error", !!isError);
    status.setAttribute("role", isError ? "alert" : "status");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.querySelector("#archive").files[0];
    if (!file) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    done.hidden = true;
    log.textContent = "";
    let guid = target.value;
    let created = false;
    try {
      if (!guid) {
        report("Creating the content…");
        const title = form.querySelector("#title").value.trim();
        const body = { name: form.querySelector("#name").value.trim() };
        if (title) body.title = title;
        const content = await Podium.request("POST", "v1/content", body);
        guid = content.guid;
        created = true;
      }
      report(`Uploading ${file.name} (${Math.ceil(file.size / 1024)} KiB)…`);
      let bundle;
      try {
        bundle = await Podium.request("POST", `v1/content/${guid}/bundles`, file,
          { raw: true, contentType: "application/gzip" });
      } catch (err) {
        // Leave nothing half-made behind: the same name can be used again.
        if (created) await Podium.request("DELETE", `v1/content/${guid}`).catch(() => {});
        throw err;
      }
      report(`Deploying bundle ${bundle.id}…`);
      log.hidden = false;
      const task = await Podium.deploy(guid, bundle.id, log);
      const link = document.getElementById("publish-link");
      link.href = `/connect/apps/${guid}`;
      done.hidden = false;
      if (task.code === 0 && !task.error) {
        report(`Deployed: bundle ${bundle.id} is active.`);
      } else {
        report(`The deploy failed: ${task.error || "see the output above"}. The content keeps its previous bundle.`, true);
      }
    } catch (err) {
      report(err.message, true);
    } finally {
      button.disabled = false;
    }
  });
})();

/* Publish from Git: create the content, point it at the repository, deploy, follow the task. */
(() => {
  const form = document.getElementById("git-form");
  if (!form) return;
  const status = document.getElementById("git-status");
  const log = document.getElementById("git-log");
  const done = document.getElementById("git-done");

  function report(message, isError) {
    status.textContent = message;
    status.classList.toggle("error", !!isError);
    status.setAttribute("role", isError ? "alert" : "status");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    done.hidden = true;
    log.textContent = "";
    let guid = null;
    try {
      report("Creating the content…");
      const title = form.querySelector("#git-title-field").value.trim();
      const body = { name: form.querySelector("#git-name").value.trim() };
      if (title) body.title = title;
      guid = (await Podium.request("POST", "v1/content", body)).guid;
      try {
        await Podium.request("PUT", `v1/content/${guid}/repository`, {
          repository: form.querySelector("#git-url").value.trim(),
          branch: form.querySelector("#git-branch").value.trim() || "main",
          directory: form.querySelector("#git-directory").value.trim() || ".",
          polling: form.querySelector("#git-polling").checked,
        });
      } catch (err) {
        await Podium.request("DELETE", `v1/content/${guid}`).catch(() => {});
        throw err;
      }
      report("Fetching the repository and deploying…");
      log.hidden = false;
      const started = await Podium.request("POST", `v1/content/${guid}/deploy`, { bundle_id: null });
      const task = await Podium.followTask(started.task_id, log);
      document.getElementById("git-link").href = `/connect/apps/${guid}/repository`;
      done.hidden = false;
      if (task.code === 0 && !task.error) {
        report("Deployed from Git.");
      } else {
        report(`The deploy failed: ${task.error || "see the output above"}`, true);
      }
    } catch (err) {
      report(err.message, true);
    } finally {
      button.disabled = false;
    }
  });
})();
