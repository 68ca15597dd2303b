// REST client: every request carries the API key kept in this browser session only.
const KEY = "ai-sdr-api-key";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
};

// A 422's list of invalid fields reads as sentences ("recipients.1.dynamic_variables.company: …").
const describe = (detail) => (Array.isArray(detail)
  ? detail.map((e) => (e && e.msg ? `${(e.loc || []).filter((p) => p !== "body").join(".")}${e.loc ? ": " : ""}${e.msg}` : JSON.stringify(e))).join("; ")
  : typeof detail === "string" ? detail : JSON.stringify(detail));

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail));
    this.status = status;
    this.detail = detail;
  }
}

export async function api(method, path, body) {
  const headers = { "xi-api-key": session.key || "" };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { headers["content-type"] = "application/json"; payload = JSON.stringify(body); }
  const response = await fetch(`/v1${path}`, { method, headers, body: payload });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new ApiError(response.status, data.detail ?? data);
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);
