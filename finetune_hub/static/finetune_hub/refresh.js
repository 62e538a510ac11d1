// Reloads the page after data-refresh-seconds (on this script's tag) while work is in progress.
(function () {
  const seconds = Number(document.currentScript.dataset.refreshSeconds || 5);
  setTimeout(() => window.location.reload(), seconds * 1000);
})();
