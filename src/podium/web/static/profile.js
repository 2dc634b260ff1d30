/* Profile page: show a newly created API key once. */
"use strict";

Podium.handlers.showKey = (key) => {
  const box = document.getElementById("new-key");
  const input = document.getElementById("new-key-value");
  input.value = key.key;
  box.hidden = false;
  const tbody = document.querySelector("#keys-table tbody");
  const empty = tbody.querySelector(".no-keys");
  if (empty) empty.remove();
  const row = tbody.insertRow();
  for (const text of [key.name, key.prefix + "…", "just now", "—", ""]) row.insertCell().textContent = text;
  document.getElementById("key-name").value = "";
  input.focus();
  input.select();
};

document.addEventListener("DOMContentLoaded", () => {
  const copy = document.getElementById("copy-key");
  if (!copy) return;
  copy.addEventListener("click", async () => {
    const input = document.getElementById("new-key-value");
    try {
      await navigator.clipboard.writeText(input.value);
      copy.textContent = "Copied";
    } catch (err) {
      input.select();
      copy.textContent = "Press Ctrl+C";
    }
  });
});
