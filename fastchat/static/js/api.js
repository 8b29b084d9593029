// The HTTP API: auth, rooms, uploads, authenticated file downloads.

/** An HTTP error carrying the server's `error` text, `code` and `field`. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `Request failed (${status})`);
    this.status = status;
    this.code = body?.code;
    this.field = body?.field;
  }
}

async function request(method, path, { token, json } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
    });
  } catch {
    throw new ApiError(0, { error: 'Cannot reach the server. Check your connection.' });
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 429) {
      const wait = response.headers.get('Retry-After');
      if (wait) error.message = `${error.message} Try again in ${wait} s.`;
    }
    throw error;
  }
  return body;
}

/** POST /api/auth/login → {user, token, refreshToken}. */
export const login = (username, password) =>
  request('POST', '/api/auth/login', { json: { username, password } });

/** POST /api/auth/register → {user, token, refreshToken}. */
export const register = (username, email, password) =>
  request('POST', '/api/auth/register', { json: { username, email, password } });

/** POST /api/auth/refresh → {token, refreshToken}; the refresh token given is spent. */
export const refresh = (refreshToken) =>
  request('POST', '/api/auth/refresh', { json: { refreshToken } });

/** POST /api/auth/logout: end this session on the server. */
export const logout = (token) => request('POST', '/api/auth/logout', { token });

/** When an access token (a JWT) expires, in ms since the epoch (0 when unreadable). */
export function tokenExpiry(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).exp * 1000;
  } catch {
    return 0;
  }
}

/**
 * Upload a file as a raw body with progress. Resolves to the server's `file`
 * ({id, name, size, contentType, url}).
 */
export function upload(file, token, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/chat/upload');
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
    xhr.setRequestHeader('X-Filename', encodeURIComponent(file.name));
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 201 && xhr.response?.file) resolve(xhr.response.file);
      else reject(new ApiError(xhr.status, xhr.response));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, { error: 'Upload failed' })));
    xhr.send(file);
  });
}

const blobUrls = new Map();
const RETRY_DELAYS_MS = [300, 1000, 3000];

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// A file announced in a message can be a moment ahead of its storage: retry a 404 briefly.
async function fetchBlob(url, token) {
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
    if (response.ok) return response.blob();
    if (response.status !== 404 || attempt >= RETRY_DELAYS_MS.length) {
      throw new ApiError(response.status, await response.json().catch(() => null));
    }
    await sleep(RETRY_DELAYS_MS[attempt]);
  }
}

/** Fetch an attachment with the Bearer token into a (cached) blob: URL. */
export function blobUrl(url, token) {
  if (!blobUrls.has(url)) {
    const pending = fetchBlob(url, token).then((blob) => URL.createObjectURL(blob));
    pending.catch(() => blobUrls.delete(url));
    blobUrls.set(url, pending);
  }
  return blobUrls.get(url);
}
