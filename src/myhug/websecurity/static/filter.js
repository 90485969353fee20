// Progressive enhancement of "Mon profil": a box that narrows the specialty checkboxes as one types.
// Without JavaScript the page shows every specialty, grouped; nothing depends on this file.
(function () {
  "use strict";
  var box = document.getElementById("specialty-filter");
  var list = document.getElementById("specialty-list");
  if (!box || !list) { return; }
  box.parentNode.hidden = false;
  function fold(text) {
    return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }
  box.addEventListener("input", function () {
    var wanted = fold(box.value.trim());
    list.querySelectorAll(".specialty-group").forEach(function (group) {
      var shown = 0;
      group.querySelectorAll("label").forEach(function (label) {
        var match = !wanted || fold(label.textContent).indexOf(wanted) !== -1 || label.querySelector("input").checked;
        label.hidden = !match;
        if (match) { shown += 1; }
      });
      group.hidden = shown === 0;
    });
  });
}());
