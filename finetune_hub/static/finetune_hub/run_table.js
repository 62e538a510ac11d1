// The Runs page: "Compare selected" sends the ticked runs' ids to the comparison page.
document.getElementById("compare-form").addEventListener("submit", function () {
  const picked = Array.from(document.querySelectorAll("input.pick:checked")).map((box) => box.value);
  document.getElementById("compare-ids").value = picked.join(",");
});
