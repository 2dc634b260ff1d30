/* Administration: role changes from the users table, and a delayed refresh after stopping a process. */
"use strict";

Podium.handlers.reloadSoon = () => { setTimeout(() => window.location.reload(), 1500); };

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
