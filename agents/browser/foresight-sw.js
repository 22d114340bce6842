// The Foresight Service Worker: answers the page's own GET /v1/content/{id}.
//
// Registered with scope "/" (the node serves this script with `Service-Worker-Allowed: /`).
// When Cache Storage ("foresight-v1", filled by foresight-agent.js from the node's pushes)
// holds the item, the answer comes from there, marked `X-Foresight-Cache: hit`; otherwise it
// comes from the network, marked `X-Foresight-Cache: miss`. Either way the page that asked is
// told (postMessage "foresight:served"), so its agent can report hit and miss feedback.
//
// The token: a request that already carries `Authorization` or `?token=` goes out as it is.
// Otherwise the worker asks the page that made the request for its token (postMessage
// "foresight:token" with a MessageChannel; the agent answers) and sends it as
// `Authorization: Bearer`. The worker keeps no token: it is restarted at will, and each page
// speaks for its own client.

const CACHE_NAME = "foresight-v1";
const CONTENT_PATH = "/v1/content/";
// How long to wait for the page's token; a page without an agent never answers.
const TOKEN_WAIT_MS = 1000;
// Internal to the agent (marks an item whose hit was reported); not part of the answer.
const USED_HEADER = "X-Foresight-Used";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("message", (event) => {
  if (event.data?.type === "foresight:claim") event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith(CONTENT_PATH) || url.pathname.length === CONTENT_PATH.length) return;
  event.respondWith(answer(event, url));
});

async function answer(event, url) {
  const started = performance.now();
  const contentId = decodeURIComponent(url.pathname.slice(CONTENT_PATH.length));
  const cache = await caches.open(CACHE_NAME);
  const cached = await cache.match(url.origin + url.pathname); // the query (?token=) aside
  const response = cached ?? (await fetch(await withToken(event)));
  const outcome = cached ? "hit" : "miss";
  event.waitUntil(
    tell(event.clientId, {
      type: "foresight:served",
      content_id: contentId,
      version: versionOf(response),
      outcome,
      latency_ms: performance.now() - started,
      status: response.status,
    }),
  );
  return marked(response, outcome);
}

function marked(response, outcome) {
  const headers = new Headers(response.headers);
  headers.delete(USED_HEADER);
  headers.set("X-Foresight-Cache", outcome);
  const { status, statusText } = response;
  return new Response(response.body, { status, statusText, headers });
}

function versionOf(response) {
  const version = Number(response.headers.get("X-Content-Version"));
  return response.headers.has("X-Content-Version") && Number.isInteger(version) ? version : null;
}

async function withToken(event) {
  const { request } = event;
  if (request.headers.has("Authorization") || new URL(request.url).searchParams.has("token")) {
    return request;
  }
  const token = await askToken(event.clientId);
  if (!token) return request;
  const headers = new Headers(request.headers);
  headers.set("Authorization", `Bearer ${token}`);
  // A fresh same-origin request: an <img>'s no-cors request would drop the header.
  return new Request(request.url, {
    headers,
    mode: "same-origin",
    credentials: request.credentials,
    redirect: request.redirect,
    signal: request.signal,
  });
}

async function askToken(clientId) {
  const client = clientId ? await self.clients.get(clientId) : undefined;
  if (!client) return null;
  const channel = new MessageChannel();
  const reply = new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), TOKEN_WAIT_MS);
    channel.port1.onmessage = (event) => {
      clearTimeout(timer);
      const token = event.data?.token;
      resolve(typeof token === "string" && token ? token : null);
    };
  });
  client.postMessage({ type: "foresight:token" }, [channel.port2]);
  return reply;
}

async function tell(clientId, message) {
  const client = clientId ? await self.clients.get(clientId) : undefined;
  client?.postMessage(message);
}
