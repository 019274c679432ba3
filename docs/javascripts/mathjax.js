// MathJax configuration for pymdownx.arithmatex (generic mode), as in the mkdocs-material documentation.
// MathJax itself is bundled beside this file (tex-svg-full.js, MathJax 3.2.2, Apache-2.0, LICENSE-mathjax.txt): the
// SVG output carries its own glyphs and the "full" component every TeX extension, so the site renders its formulas
// with no network access (tests/test_docs_offline.py checks this in headless Chromium with the network off).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  },
  svg: {
    fontCache: "global"
  }
};

// mkdocs-material's instant navigation replaces the page without reloading the scripts: typeset again each time.
// (document$ exists only under mkdocs-material; MathJax typesets the first page itself at start-up.)
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (!window.MathJax || !MathJax.startup || !MathJax.startup.output) return;
    MathJax.startup.output.clearCache()
    MathJax.typesetClear()
    MathJax.texReset()
    MathJax.typesetPromise()
  })
}
