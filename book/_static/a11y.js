// Four accessibility repairs of the generated markup (html_js_files in _config.yml); axe-core checks
// every page in tests/test_browser.py.
// 1. docutils writes the bibliography as role="list" holding role="doc-biblioentry" entries, a role that
//    DPUB-ARIA 1.1 deprecates in favour of listitem: axe then finds the list's children invalid
//    (aria-required-children, critical). Each entry becomes a listitem; its id and content stay.
// 2. MyST-NB's "Show code cell source" toggles and the theme's search button carry an aria-label
//    ("Toggle hidden content", "Search") other than the words they show, so a speech-input user who
//    says what they see misses them (label-content-name-mismatch, serious): their visible words
//    become their name.
// 3. An ipywidgets slider's handle (role="slider") has no accessible name of its own, although the widget
//    shows one in its description label (aria-input-field-name, serious): the label's text becomes the
//    handle's name. An image in a widget's stored output has no alt text (image-alt, critical): it gets
//    one naming the controls and values that drew it. Widgets render after the page loads, so on pages with saved widgets this runs
//    whenever nodes are added.
// 4. The theme makes a code block or output keyboard-scrollable (tabindex 0) when it overflows, but
//    judges that once at start-up and on resize, before the web fonts have settled the layout; a block
//    that overflows afterwards stayed out of the tab order (scrollable-region-focusable, serious). A
//    resize event once the fonts are ready and the page has loaded lets the theme judge again.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll('[role="doc-biblioentry"]').forEach((entry) => entry.setAttribute("role", "listitem"));
  document.querySelectorAll('summary[aria-label="Toggle hidden content"], button.search-button__button[aria-label="Search"]')
    .forEach((control) => control.removeAttribute("aria-label"));
});
window.addEventListener("load", () => {
  document.fonts.ready.then(() => window.dispatchEvent(new Event("resize")));
});

function textOf(element) {
  return element ? element.textContent.replace(/\s+/g, " ").trim() : "";
}

function repairWidgets() {
  document.querySelectorAll(".widget-slider .noUi-handle:not([aria-label])").forEach((handle) => {
    handle.setAttribute("aria-label", textOf(handle.closest(".widget-slider").querySelector(".widget-label")) || "slider");
  });
  // An interactive plot's stored image (ipywidgets' Output renders images without alt): say what drew it.
  document.querySelectorAll(".widget-output img:not([alt])").forEach((img) => {
    const box = img.closest(".widget-vbox, .widget-box");
    const controls = box ? [...box.querySelectorAll(".widget-label")].map((label) => {
      const value = label.parentElement.querySelector(".widget-readout, select, input");
      return `${textOf(label)} ${value ? (value.value ?? textOf(value)) : ""}`.trim();
    }).filter(Boolean) : [];
    img.alt = `Plot the chapter's code drew for ${controls.join(", ") || "the control above"}, stored when the `
      + "page was built; run the chapter to draw others";
  });
}
document.addEventListener("DOMContentLoaded", () => {
  if (document.querySelector('script[type="application/vnd.jupyter.widget-view+json"]')) {
    new MutationObserver(repairWidgets).observe(document.body, { childList: true, subtree: true });
  }
});
