/* Podium dashboard: small progressive enhancements over server-rendered pages.
 *
 * Every change goes through the server API (/__api__/...) with the session
 * cookie and the X-CSRF-Token header (the token is in the page's
 * <meta name="csrf-token">; no cookie holds it); errors show the API's `error` message.
 *
 *   <form data-api="PATCH v1/content/GUID" data-then="reload|stay|NAME">
 *     fields: name = API field ("config.client_id": a field of the object "config");
 *             data-kind = int|float|string|bool|null-string;
 *             data-scale = multiply numbers before sending; empty numbers send null
 *   <button data-api="DELETE v1/..." data-confirm="..." data-then="reload">
 */
"use strict";

const Podium = (() => {
  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  class ApiError extends Error {
    constructor(message, status, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function request(method, path, body, options = {}) {
    const headers = { "X-CSRF-Token": csrfToken(), Accept: "application/json" };
    let payload = body;
    if (body !== undefined && !options.raw) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    } else if (options.contentType) {
      headers["Content-Type"] = options.contentType;
    }
    let response;
    try {
      response = await fetch("/__api__/" + path, {
        method, headers, body: payload, credentials: "same-origin",
      });
    } catch (err) {
      throw new ApiError("The server could not be reached; check your connection and try again.", 0, 0);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
    if (!response.ok) {
      if (response.status === 401) {
        throw new ApiError("Your session has ended: sign in again, then retry.", 401, 0);
      }
      const message = data && data.error ? data.error : `The server answered ${response.status}.`;
      throw new ApiError(message, response.status, data ? data.code : 0);
    }
    return data;
  }

  function fieldValue(el) {
    const kind = el.dataset.kind || "string";
    if (kind === "bool") return el.checked;
    const raw = el.value.trim();
    if (kind === "int" || kind === "float") {
      if (raw === "") return null;
      const number = Number(raw);
      if (Number.isNaN(number)) return raw; // let the server name the problem
      const scaled = number * Number(el.dataset.scale || 1);
      return kind === "int" ? Math.round(scaled) : scaled;
    }
    if (kind === "null-string") return raw === "" ? null : raw;
    if (kind === "installations") return installations(el);
    return el.value;
  }

  /* "VERSION PATH" lines into {"installations": [{version, path}]}. */
  function installations(el) {
    const label = el.labels && el.labels[0] ? el.labels[0].textContent.trim() : el.name;
    const items = [];
    el.value.split("\n").forEach((line, index) => {
      const text = line.trim();
      if (!text) return;
      const parts = text.split(/\s+/);
      if (parts.length !== 2) {
        throw new ApiError(`${label}, line ${index + 1}: write the version, a space, then the path (for example 3.12.4 /usr/bin/python3.12).`, 0, 0);
      }
      items.push({ version: parts[0], path: parts[1] });
    });
    return { installations: items };
  }

  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.dataset.skip !== undefined || el.disabled) continue;
      if (el.type === "radio" && !el.checked) continue;
      const value = fieldValue(el);
      const dot = el.name.indexOf(".");
      if (dot > 0) { // "config.client_id": a field of a nested object; empty ones left out
        const outer = el.name.slice(0, dot);
        body[outer] = body[outer] || {};
        if (value !== null && value !== "") body[outer][el.name.slice(dot + 1)] = value;
        continue;
      }
      body[el.name] = value;
    }
    if (form.dataset.wrap === "array") return [body];
    return body;
  }

  function statusOf(el) {
    const container = el.closest("[data-status-scope]") || el.closest("form") || el.parentElement;
    let status = container.querySelector(":scope > .status, .status");
    if (!status) {
      status = document.createElement("p");
      status.className = "status";
      status.setAttribute("role", "status");
      status.setAttribute("aria-live", "polite");
      container.appendChild(status);
    }
    return status;
  }

  function say(el, message, isError) {
    const status = statusOf(el);
    status.textContent = message;
    status.classList.toggle("error", !!isError);
    status.setAttribute("role", isError ? "alert" : "status");
  }

  const handlers = {
    reload() { window.location.reload(); },
    stay() {},
    groups() { window.location.assign("/connect/groups"); },
  };

  async function runAction(el, method, path, makeBody) {
    if (el.dataset.confirm && !window.confirm(el.dataset.confirm)) return;
    let body;
    try {
      body = makeBody();
    } catch (err) {
      say(el, err.message, true);
      return;
    }
    const buttons = el.tagName === "FORM" ? el.querySelectorAll("button") : [el];
    buttons.forEach((b) => { b.disabled = true; });
    say(el, el.dataset.working || "Working…", false);
    try {
      const result = await request(method, path, body);
      say(el, el.dataset.success || "Saved.", false);
      const then = handlers[el.dataset.then || "stay"];
      if (then) await then(result, el);
    } catch (err) {
      say(el, err.message, true);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function split(spec) {
    const space = spec.indexOf(" ");
    return [spec.slice(0, space), spec.slice(space + 1)];
  }

  function wire(root) {
    root.querySelectorAll("form[data-api]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const [method, path] = split(form.dataset.api);
        runAction(form, method, path, () => formBody(form));
      });
    });
    root.querySelectorAll("button[data-api]").forEach((button) => {
      button.addEventListener("click", () => {
        const [method, path] = split(button.dataset.api);
        const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
        runAction(button, method, path, () => body);
      });
    });
  }

  /* Follow a task (deploy) to its end, appending its output to `log`. */
  async function followTask(taskId, log) {
    let first = 0;
    for (;;) {
      const task = await request("GET", `v1/tasks/${taskId}?first=${first}&wait=10`);
      for (const line of task.output) appendLine(log, line);
      first = task.last;
      if (task.finished) return task;
    }
  }

  function appendLine(log, text, source) {
    const line = document.createElement("div");
    line.className = "line" + (source ? " " + source : "");
    line.textContent = text;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(line);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  /* Deploy a bundle of content and follow the task; resolves to the finished task. */
  async function deploy(guid, bundleId, log) {
    const started = await request("POST", `v1/content/${guid}/deploy`, { bundle_id: String(bundleId) });
    return followTask(started.task_id, log);
  }

  document.addEventListener("DOMContentLoaded", () => wire(document));

  return { request, followTask, deploy, appendLine, say, handlers, ApiError, csrfToken };
})();
window.Podium = Podium;
