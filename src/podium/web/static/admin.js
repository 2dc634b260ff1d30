/* Administration: role changes from the users table, a delayed refresh after stopping a
 * process, and following a task (a runtime cache's deletion) before reloading. */
"use strict";

Podium.handlers.reloadSoon = () => { setTimeout(() => window.location.reload(), 1500); };

Podium.handlers.task = async (result, el) => {
  const log = document.querySelector(".task-log");
  log.hidden = false;
  const task = await Podium.followTask(result.task_id, log);
  if (task.code !== 0) {
    Podium.say(el, task.error || "The task failed.", true);
    return;
  }
  Podium.say(el, "Done.", false);
  setTimeout(() => window.location.reload(), 1500);
};

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("select[data-role-of]").forEach((select) => {
    select.addEventListener("change", async () => {
      const role = select.value;
      try {
        await Podium.request("PUT", `v1/users/${select.dataset.roleOf}`, { user_role: role });
        select.dataset.current = role;
        Podium.say(select, `Role changed to ${role}.`, false);
      } catch (err) {
        select.value = select.dataset.current;
        Podium.say(select, err.message, true);
      }
    });
  });
});
