// Drag and drop onto the upload area, auto-submit on file choice, and the epoch switch.
// The forms work without this script (a submit button each); it only saves clicks.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  var input = document.getElementById("image");
  var drop = document.getElementById("drop");
  if (form && input) {
    input.addEventListener("change", function () {
      if (input.files.length) { form.submit(); }
    });
  }
  if (form && input && drop) {
    ["dragenter", "dragover"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        form.submit();
      }
    });
  }
  var epoch = document.getElementById("epoch");
  if (epoch) {
    epoch.addEventListener("change", function () { epoch.form.submit(); });
  }
}());
