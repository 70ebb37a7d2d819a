// The Files tab: the kernel's /home/work (list, download, upload) and the key's
// virtual folders (list, create, choose which the next kernel mounts).
// Shapes: server/faces/v2/files.py (the listing's "files" is a JSON *string* of
// {filename, size, mode, mtime, ...} entries, mode as `ls -l` prints it) and
// server/faces/v2/folders.py (a plain list of {name, id, ...}).

import { API, kernelPath, request } from "./api.js";

const MOUNTS_KEY = "playground-mounts";

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function loadMounts() {
  try {
    return new Set(JSON.parse(sessionStorage.getItem(MOUNTS_KEY) || "[]"));
  } catch {
    return new Set();
  }
}

export class FilesView {
  /**
   * elements: the panel's controls (#file-list, #upload, ...).
   * hooks.onProblem(error): an ApiError to show (the app also notices a gone kernel).
   */
  constructor(elements, hooks) {
    this.el = elements;
    this.hooks = hooks;
    this.kernelId = null;
    this.visible = false;
    this.checked = loadMounts(); // folder names chosen for the next kernel
    this.folderNames = [];

    elements.refresh.addEventListener("click", () => {
      this.refresh();
      this.refreshFolders();
    });
    elements.uploadButton.addEventListener("click", () => this.upload());
    elements.createFolder.addEventListener("click", () => this.createFolder());
    elements.newFolderName.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.createFolder();
      }
    });
    elements.folderList.addEventListener("change", (event) => {
      const box = event.target;
      if (box.name !== "mount") return;
      if (box.checked) this.checked.add(box.value);
      else this.checked.delete(box.value);
      this.saveMounts();
    });
  }

  attach(kernelId) {
    this.kernelId = kernelId;
    if (kernelId === null) {
      this.el.fileList.replaceChildren();
      this.el.filesEmpty.textContent = "No kernel.";
      this.el.filesEmpty.hidden = false;
    } else if (this.visible) {
      this.refresh();
    }
  }

  /** The tab was shown (true) or hidden: lists are fetched only while it is seen. */
  setVisible(visible) {
    this.visible = visible;
    if (visible) {
      this.refresh();
      this.refreshFolders();
    }
  }

  /** After a run (it may have written files): refresh if anyone is looking. */
  runEnded() {
    if (this.visible) this.refresh();
  }

  /** Folder names the next kernel should mount (the checked boxes that still exist). */
  mounts() {
    return this.folderNames.filter((name) => this.checked.has(name));
  }

  async refresh() {
    const kernelId = this.kernelId;
    if (kernelId === null) return;
    let listing;
    try {
      listing = await request("GET", kernelPath(kernelId, "/files?path=."));
    } catch (error) {
      this.hooks.onProblem(error);
      return;
    }
    if (kernelId !== this.kernelId) return; // the kernel changed while we waited
    let entries = [];
    try {
      entries = typeof listing.files === "string" ? JSON.parse(listing.files) : listing.files || [];
    } catch {
      entries = [];
    }
    this.renderFiles(kernelId, entries);
    if (listing.errors) this.setState(String(listing.errors));
  }

  renderFiles(kernelId, entries) {
    const items = entries.map((entry) => {
      const name = String(entry.filename ?? entry.name ?? "");
      const mode = String(entry.mode || "");
      const li = document.createElement("li");
      const label = document.createElement("span");
      label.className = "name";
      const isDir = mode.startsWith("d");
      label.textContent = isDir ? `${name}/` : name;
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = isDir ? "folder" : mode.startsWith("l") ? "link" : formatSize(Number(entry.size) || 0);
      li.append(label, meta);
      if (mode.startsWith("-")) {
        // A plain link: the server answers it as an attachment (its own CSP: sandbox).
        const link = document.createElement("a");
        link.className = "download";
        link.href = `download/${encodeURIComponent(kernelId)}?path=${encodeURIComponent(name)}`;
        link.setAttribute("download", "");
        link.append("Download");
        const hidden = document.createElement("span");
        hidden.className = "visually-hidden";
        hidden.textContent = ` ${name}`;
        link.append(hidden);
        li.append(link);
      }
      return li;
    });
    this.el.fileList.replaceChildren(...items);
    this.el.filesEmpty.textContent = "No files yet.";
    this.el.filesEmpty.hidden = items.length > 0;
  }

  async upload() {
    const files = [...this.el.upload.files];
    if (this.kernelId === null || files.length === 0) {
      this.setState(files.length === 0 ? "Choose files to upload first." : "No kernel.");
      return;
    }
    const form = new FormData();
    for (const file of files) form.append("src", file, file.name);
    this.el.uploadButton.disabled = true;
    this.setState("Uploading…");
    try {
      await request("POST", kernelPath(this.kernelId, "/upload"), { body: form });
      this.setState(`Uploaded ${files.length} file${files.length === 1 ? "" : "s"}.`);
      this.el.upload.value = "";
    } catch (error) {
      this.setState("The upload failed.");
      this.hooks.onProblem(error);
    } finally {
      this.el.uploadButton.disabled = false;
    }
    this.refresh();
  }

  async refreshFolders() {
    let folders;
    try {
      folders = await request("GET", `${API}folders`);
    } catch (error) {
      this.hooks.onProblem(error);
      return;
    }
    const list = Array.isArray(folders) ? folders : folders?.folders || [];
    this.folderNames = list.map((folder) => String(folder.name));
    const items = this.folderNames.map((name) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      label.className = "check";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "mount";
      box.value = name;
      box.checked = this.checked.has(name);
      label.append(box, document.createTextNode(` ${name}`));
      li.append(label);
      return li;
    });
    this.el.folderList.replaceChildren(...items);
    this.el.foldersEmpty.hidden = items.length > 0;
  }

  async createFolder() {
    const name = this.el.newFolderName.value.trim();
    if (!name) {
      this.setState("Type a name for the folder first.");
      this.el.newFolderName.focus();
      return;
    }
    this.el.createFolder.disabled = true;
    try {
      await request("POST", `${API}folders`, { json: { name } });
      this.el.newFolderName.value = "";
      // Made to be used: checked for the next kernel (one click to undo).
      this.checked.add(name);
      this.saveMounts();
      this.setState(`Folder ${name} created. Press New kernel to mount it.`);
    } catch (error) {
      this.setState("The folder was not created.");
      this.hooks.onProblem(error);
    } finally {
      this.el.createFolder.disabled = false;
    }
    this.refreshFolders();
  }

  saveMounts() {
    try {
      sessionStorage.setItem(MOUNTS_KEY, JSON.stringify([...this.checked]));
    } catch {
      /* storage disabled: the choice lasts until a reload */
    }
  }

  setState(text) {
    this.el.state.textContent = text;
  }
}
