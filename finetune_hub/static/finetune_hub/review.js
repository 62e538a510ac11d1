// Keyboard shortcuts for the blind review: each button names its keys in data-keys.
// Typing in the comment box is left alone; one key press submits one vote.
(function () {
  const form = document.getElementById("review-form");
  if (!form) return;
  const buttons = new Map();
  form.querySelectorAll("button[data-keys]").forEach((button) => {
    button.dataset.keys.split(" ").forEach((key) => buttons.set(key, button));
  });
  let sent = false;
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (sent || event.ctrlKey || event.metaKey || event.altKey) return;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
    const button = buttons.get(event.key);
    if (!button) return;
    event.preventDefault();
    sent = true;
    form.requestSubmit(button);
  });
})();
