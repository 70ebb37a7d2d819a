// Talking to the server: fetch with the CSRF header, problem+json errors, and the
// WebSocket URL of a path. Every path is relative to the page ({P}/), so the page
// works under any prefix the server is configured with.

/** An error answer, carrying the problem document's title and detail for the user. */
export class ApiError extends Error {
  constructor(status, title, detail = "", type = "") {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.type = type;
  }
}

// Where the page reaches the v2 API, relative to the page: the server answers
// {P}/web/v2/... as the v2 API would the signed-in key (server/faces/web/gate.py;
// not api/, which is the Piston face's).
export const API = "web/v2/";

/** The path of a kernel's route: kernelPath(id, "/files?path=.") */
export function kernelPath(id, rest = "") {
  return `${API}kernel/${encodeURIComponent(id)}${rest}`;
}

let csrfToken = "";
let onSignedOut = () => {};

/** The token GET session gave; sent as X-CSRF-Token on every non-GET request. */
export function setCsrfToken(token) {
  csrfToken = token;
}

/** What to do when an API request answers 401 (the session or its key ended). */
export function onSessionEnded(handler) {
  onSignedOut = handler;
}

/** The problem document of a failed response, as an ApiError. */
async function problemOf(response) {
  let title = `${response.status} ${response.statusText || "error"}`;
  let detail = "";
  let type = "";
  const kind = response.headers.get("content-type") || "";
  if (kind.includes("json")) {
    try {
      const body = await response.json();
      // Problem documents have title/detail; some older routes say msg.
      if (body && typeof body === "object") {
        title = String(body.title || body.msg || title);
        detail = body.detail ? String(body.detail) : "";
        type = body.type ? String(body.type) : "";
      }
    } catch {
      /* a broken body: keep the status line */
    }
  }
  return new ApiError(response.status, title, detail, type);
}

/**
 * One request. `json` is sent as a JSON body, `body` as is (FormData for uploads).
 * Answers the parsed JSON, or null for an empty answer (204). Throws ApiError.
 */
export async function request(method, path, { json, body } = {}) {
  const headers = {};
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "The server cannot be reached", String(e.message || e));
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    if (response.status === 401 && path.startsWith(API)) onSignedOut(problem);
    throw problem;
  }
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** ws:// or wss:// URL of a path relative to the page (same host, same cookie). */
export function wsURL(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** Base64 of a string's UTF-8 bytes (btoa alone only takes Latin-1). */
export function utf8ToBase64(text) {
  return bytesToBase64(new TextEncoder().encode(text));
}

/** Base64 of bytes, in chunks (String.fromCharCode(...big) overflows the stack). */
export function bytesToBase64(bytes) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}

/** The bytes a base64 string holds. */
export function base64ToBytes(data) {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
