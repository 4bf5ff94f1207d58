// Which view the page is: the desk page (narrow screens get the same page, laid out in one column)
// or the wall screen, `/?kiosk`: dark, large type, no controls, everything on one screen. The view
// is a class on the root element; style.css does the rest.

/** "kiosk" for `/?kiosk` (any value), else "desk". */
export const VIEW = new URLSearchParams(location.search).has("kiosk") ? "kiosk" : "desk";

/** Mark the root element with the view (before the charts read their colours from CSS). */
export function applyView() {
  document.documentElement.classList.toggle("kiosk", VIEW === "kiosk");
}
