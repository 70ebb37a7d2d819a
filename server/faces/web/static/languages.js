// The language menu: GET web/v2/kernel/languages (server/faces/v2/languages.py:
// rows of {lang, available, version, missing, install, ...}) into #language, and
// which one to start with (the previous choice, else python3, else the first).

import { API, request } from "./api.js";

const LANG_KEY = "playground-lang";
const DEFAULT_LANG = "python3";

/** A version command's first line, short enough for a menu ("gcc (Debian ...) 12.2.0"). */
function versionLabel(row) {
  const version = String(row.version || "").split("\n")[0].trim();
  return version.length > 48 ? `${version.slice(0, 47)}…` : version;
}

/** Fill `select`; answers the language to start with, or null if none is installed. */
export async function loadLanguages(select) {
  const answer = await request("GET", `${API}kernel/languages`);
  const rows = (answer.languages || []).filter((row) => row.lang || row.name);
  const nameOf = (row) => String(row.lang || row.name); // "name" as the contract called it
  select.replaceChildren(
    ...rows.map((row) => {
      const option = document.createElement("option");
      option.value = nameOf(row);
      const available = row.available !== false;
      const version = versionLabel(row);
      option.textContent = !available
        ? `${nameOf(row)} (not installed)`
        : version
          ? `${nameOf(row)} (${version})`
          : nameOf(row);
      option.disabled = !available; // listed, so nobody wonders where it went
      return option;
    }),
  );
  const usable = rows.filter((row) => row.available !== false).map(nameOf);
  return [savedLanguage(), DEFAULT_LANG, usable[0]].find((lang) => lang && usable.includes(lang)) ?? null;
}

function savedLanguage() {
  try {
    return localStorage.getItem(LANG_KEY);
  } catch {
    return null; // storage disabled
  }
}

/** Remember the choice for the next visit (this browser). */
export function saveLanguage(lang) {
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch {
    /* storage disabled: the choice lasts until a reload */
  }
}
