// Progressive enhancement of "Mes documents": "Tout sélectionner" ticks the boxes in place.
// Without JavaScript the same link reloads the list with every box ticked; the form works either way.
(function () {
  "use strict";
  var link = document.querySelector(".bulk .select-all");
  if (!link) { return; }
  link.setAttribute("role", "button");
  link.addEventListener("click", function (event) {
    event.preventDefault();
    var all = link.getAttribute("data-select") === "all";
    document.querySelectorAll('.bulk input[name="item"]').forEach(function (box) { box.checked = all; });
    link.setAttribute("data-select", all ? "none" : "all");
    link.textContent = all ? "Tout désélectionner" : "Tout sélectionner";
  });
}());
