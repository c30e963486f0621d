// Loaded on pages with saved widget state, after RequireJS and before the ipywidgets HTML manager
// (_config.yml, nb_ipywidgets_js), so that widgets render from the site's own files.
(function () {
  "use strict";
  // This file lives in _static/; the manager's AMD bundle sits in _static/vendor/html-manager/.
  var staticDir = document.currentScript.src.replace(/[^/]*(\?.*)?$/, "");
  // The bundle locates its icon fonts next to the module "@jupyter-widgets/html-manager/dist/…";
  // without this mapping RequireJS would place that module (and the fonts) under the page's folder.
  window.require.config({
    paths: { "@jupyter-widgets/html-manager/dist": staticDir + "vendor/html-manager" },
  });
  // ipywidgets typesets widget labels through MathJax 2's API (MathJax.Hub.Queue); the site serves
  // MathJax 3. Route those calls to MathJax 3 where it is loaded (pages with math), else do nothing.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          if (Array.isArray(job) && job[0] === "Typeset" && job[2] && mj.startup) {
            mj.startup.promise.then(function () { return mj.typesetPromise([job[2]]); });
          }
        });
      },
    };
  });
})();
