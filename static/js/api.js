// Small helpers shared by every page: fetch JSON and turn problem+json errors into readable messages.

export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || "request failed");
    this.problem = problem;
  }
}

export async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    throw new ApiError(typeof body === "object" ? body : { status: response.status, detail: body });
  }
  return body;
}

export function postJSON(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

export function uploadImage(file) {
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  return api("/api/images", { method: "POST", body: form });
}

export function showError(element, error) {
  element.textContent = error ? error.message : "";
  element.hidden = !error;
}
