// The Output / Terminal / Files tabs: the WAI-ARIA tabs pattern. One tab is in the
// Tab order (roving tabindex); the arrow keys, Home and End move between tabs and
// show each at once (automatic activation); a panel is hidden with `hidden`.

const tabs = () => [...document.querySelectorAll('[role="tab"]')];

let onShow = () => {};

/** Show `tab`'s panel and hide the others; onShow(tab.id) lets the views react. */
export function selectTab(tab) {
  for (const other of tabs()) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
  }
  onShow(tab.id);
}

/** Wire the mouse and the keyboard; `shown(tabId)` runs after each selection. */
export function setUpTabs(shown) {
  onShow = shown;
  for (const tab of tabs()) {
    tab.addEventListener("click", () => {
      if (tab.getAttribute("aria-selected") !== "true") selectTab(tab);
    });
    tab.addEventListener("keydown", (event) => {
      const all = tabs();
      const at = all.indexOf(tab);
      const next = {
        ArrowRight: all[(at + 1) % all.length],
        ArrowLeft: all[(at - 1 + all.length) % all.length],
        Home: all[0],
        End: all[all.length - 1],
      }[event.key];
      if (!next) return;
      event.preventDefault();
      next.focus();
      selectTab(next);
    });
  }
}
