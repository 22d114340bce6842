// The Foresight browser agent: an ES module, no build step, no dependencies.
//
// It holds the client's WebSocket to its cache node (docs/push-protocol.md), keeps every
// pushed item in Cache Storage as the Response the node itself would send for
// GET /v1/content/{content_id}, and reports what became of each item. The Service Worker
// (foresight-sw.js) answers the page's own requests from that cache and tells this module
// what it served, which becomes `hit` and `miss` feedback.
//
//   import { ForesightAgent } from "/agent/foresight-agent.js";
//   const agent = new ForesightAgent({ clientId, token });
//   agent.addEventListener("state", (e) => console.log(e.detail.state));
//   agent.start();
//
// The token reaches the Service Worker on demand: when the worker must go to the network it
// asks the page that made the request (a MessageChannel), this module answers with its token,
// and the worker sends it as `Authorization: Bearer`. The worker never stores it.
//
// Events (CustomEvent, details in brackets): state {state, code?, reason?},
// stored {content_id, version, digest, content_type, bytes, kind}, removed {content_id,
// version, reason}, rejected {content_id, reason}, served {content_id, version, outcome,
// latency_ms, status}, feedback {the message sent}.

export const CACHE_NAME = "foresight-v1";
export const AGENT_NAME = "foresight-browser/0.1";
export const CONTENT_PATH = "/v1/content/";
const WS_PATH = "/v1/agents/ws";
const PROTOCOL_VERSION = 1;
const MAX_HOLDINGS = 10_000;
const BACKOFF_MIN_S = 0.5;
const BACKOFF_MAX_S = 30;
const MAX_REDIRECTS = 3;
const MAX_QUEUED_FEEDBACK = 1_000;
// Marks a cached item once a request was answered from it, so `hit` is reported only once.
const USED_HEADER = "X-Foresight-Used";

// Close codes after which this token must not be retried (or the node said not to).
const FINAL_CLOSES = new Map([
  [4001, "unauthorized"],
  [4002, "superseded"],
  [4003, "forbidden"],
  [4004, "token-expired"],
]);

/** The URL under which an item is kept: the page's own GET /v1/content/{id}. */
export function contentUrl(contentId, origin = location.origin) {
  return new URL(CONTENT_PATH + contentId, origin).href;
}

/** SHA-256 of some bytes as 64 lowercase hex digits (the protocol's digest). */
export async function sha256Hex(bytes) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function versionOf(response) {
  const version = Number(response.headers.get("X-Content-Version"));
  return Number.isInteger(version) && version >= 0 ? version : null;
}

const now = () => Date.now() / 1000;

export class ForesightAgent extends EventTarget {
  #clientId;
  #token;
  #home; // the WebSocket URL we were given (any node: a non-owner redirects)
  #current; // the node we talk to, after redirects
  #cacheName;
  #ws = null;
  #state = "idle";
  #stopped = true;
  #attempt = 0; // reconnects since the last welcome
  #redirects = 0; // redirects since the last welcome
  #redirectTo = null;
  #resume = null;
  #nodeId = null;
  #heartbeat = null;
  #lastHeard = 0;
  #retry = null;
  #outbox = []; // feedback waiting for a connection
  #chain = Promise.resolve(); // cache changes run one at a time, in arrival order

  constructor({ clientId, token, node = location.origin, cacheName = CACHE_NAME }) {
    super();
    if (!clientId || !token) throw new Error("ForesightAgent needs a clientId and a token");
    this.#clientId = clientId;
    this.#token = token;
    const url = new URL(WS_PATH, node);
    url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
    this.#home = this.#current = url.href;
    this.#cacheName = cacheName;
  }

  get state() {
    return this.#state;
  }

  get clientId() {
    return this.#clientId;
  }

  start() {
    if (!this.#stopped) return;
    this.#stopped = false;
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.addEventListener("message", this.#onWorkerMessage);
      navigator.serviceWorker.startMessages();
    }
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    clearTimeout(this.#retry);
    navigator.serviceWorker?.removeEventListener("message", this.#onWorkerMessage);
    this.#drop(1000, "agent stopped");
    this.#setState("stopped");
  }

  /** What Cache Storage holds: [{content_id, version, digest}], at most MAX_HOLDINGS. */
  async holdings() {
    const cache = await caches.open(this.#cacheName);
    const held = [];
    for (const request of (await cache.keys()).slice(0, MAX_HOLDINGS)) {
      const response = await cache.match(request);
      const version = response && versionOf(response);
      const digest = response?.headers.get("X-Content-Digest");
      if (version === null || !digest) continue;
      const path = new URL(request.url).pathname;
      held.push({ content_id: decodeURIComponent(path.slice(CONTENT_PATH.length)), version, digest });
    }
    return held;
  }

  // --- the connection -------------------------------------------------------------------

  #connect(to = this.#current) {
    const url = new URL(to);
    this.#current = url.href;
    this.#redirectTo = null;
    url.searchParams.set("token", this.#token);
    const ws = new WebSocket(url);
    this.#ws = ws;
    this.#setState("connecting");
    ws.onopen = () => this.#serial(() => this.#sendHello(ws));
    ws.onmessage = (event) => this.#onFrame(event.data);
    ws.onclose = (event) => {
      if (ws === this.#ws) this.#lost(event.code, event.reason);
    };
  }

  async #sendHello(ws) {
    const hello = {
      type: "hello",
      protocol_version: PROTOCOL_VERSION,
      client_id: this.#clientId,
      holdings: await this.holdings(),
      agent: AGENT_NAME,
    };
    if (this.#resume) hello.resume = this.#resume;
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(hello));
  }

  #drop(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    clearInterval(this.#heartbeat);
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(code, reason);
  }

  #lost(code, reason) {
    this.#drop(1000, "");
    this.#resume = {
      node_id: this.#nodeId,
      redirected: code === 4010 && this.#redirectTo !== null,
      disconnected_at: now(),
    };
    if (this.#stopped) return;
    if (FINAL_CLOSES.has(code)) {
      this.#setState(FINAL_CLOSES.get(code), { code, reason });
      return;
    }
    // Where to go next: the redirect's node; after a 4010 without one, or when the node we
    // talked to fails again, the node we were given (it redirects to the owner).
    const next = this.#redirectTo ?? (code === 4010 || this.#attempt > 0 ? this.#home : this.#current);
    if (code === 4010 && this.#redirectTo && ++this.#redirects <= MAX_REDIRECTS) {
      this.#setState("redirected", { code, reason, url: next });
      this.#connect(next);
      return;
    }
    // 4008 (policy) backs off for long; everything else exponentially, with jitter.
    this.#attempt += 1;
    const ceiling =
      code === 4008 ? BACKOFF_MAX_S : Math.min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** (this.#attempt - 1));
    const delay = ceiling * (0.5 + Math.random() / 2);
    this.#setState("disconnected", { code, reason, retry_in_s: delay });
    this.#retry = setTimeout(() => this.#connect(next), delay * 1000);
  }

  #startHeartbeat(seconds) {
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      if (Date.now() - this.#lastHeard > 2 * seconds * 1000) {
        this.#lost(1006, "node silent"); // twice the heartbeat without a frame
      } else {
        this.#send({ type: "ping", ts: now() });
      }
    }, seconds * 1000);
  }

  #send(message) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({ protocol_version: PROTOCOL_VERSION, ...message }));
    return true;
  }

  #onFrame(data) {
    this.#lastHeard = Date.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("foresight: a frame that is not JSON, ignored");
      return;
    }
    switch (message?.type) {
      case "welcome":
        this.#attempt = 0;
        this.#redirects = 0;
        this.#nodeId = message.node_id;
        this.#startHeartbeat(message.heartbeat_s || 25);
        this.#setState("connected", { node_id: message.node_id });
        this.#flushFeedback();
        break;
      case "push":
      case "update":
        this.#serial(() => this.#store(message));
        break;
      case "invalidate":
        this.#serial(() => this.#invalidate(message));
        break;
      case "redirect":
        if (/^wss?:\/\//.test(message.url ?? "")) this.#redirectTo = message.url;
        break;
      case "ping":
        this.#send({ type: "pong", ts: message.ts });
        break;
      case "pong":
        break;
      case "error":
        console.warn(`foresight: node refused a frame: ${message.code} ${message.reason}`);
        break;
      default:
        console.warn(`foresight: unknown message type ${message?.type}, ignored`);
    }
  }

  // --- Cache Storage --------------------------------------------------------------------

  #serial(task) {
    const run = this.#chain.then(task);
    this.#chain = run.catch((error) => console.error("foresight:", error));
    return run;
  }

  async #store(message) {
    const { content_id, version, digest, content_type } = message;
    const body = fromBase64(message.body ?? "");
    if ((await sha256Hex(body)) !== digest) {
      this.#emit("rejected", { content_id, reason: "digest mismatch" });
      return;
    }
    const cache = await caches.open(this.#cacheName);
    const url = contentUrl(content_id);
    const held = await cache.match(url);
    if (held) {
      const heldVersion = versionOf(held);
      if (heldVersion > version) return; // older than ours
      if (heldVersion === version && held.headers.get("X-Content-Digest") === digest) return;
      if (!held.headers.has(USED_HEADER)) this.#feedback(content_id, heldVersion, "unused", 0);
    } else if (message.type === "update") {
      return; // we no longer hold it; the next hello says so
    }
    const headers = {
      "Content-Type": content_type,
      "X-Content-Version": String(version),
      "X-Content-Digest": digest,
      "X-Foresight-Pushed-At": String(message.pushed_at ?? now()),
    };
    await cache.put(url, new Response(body, { headers }));
    this.#emit("stored", { content_id, version, digest, content_type, bytes: body.length, kind: message.type });
  }

  async #invalidate({ content_id, version }) {
    const cache = await caches.open(this.#cacheName);
    const url = contentUrl(content_id);
    const held = await cache.match(url);
    if (!held) return;
    const heldVersion = versionOf(held);
    if (version !== undefined && version !== null && heldVersion > version) return;
    if (!held.headers.has(USED_HEADER)) this.#feedback(content_id, heldVersion, "unused", 0);
    await cache.delete(url);
    this.#emit("removed", { content_id, version: heldVersion, reason: "invalidated" });
  }

  /** Mark a held item used; true only the first time (that request is its `hit`). */
  async #markUsed(contentId, version) {
    const cache = await caches.open(this.#cacheName);
    const url = contentUrl(contentId);
    const held = await cache.match(url);
    if (!held || versionOf(held) !== version || held.headers.has(USED_HEADER)) return false;
    const headers = new Headers(held.headers);
    headers.set(USED_HEADER, String(now()));
    await cache.put(url, new Response(await held.arrayBuffer(), { headers }));
    return true;
  }

  // --- the Service Worker and feedback --------------------------------------------------

  #onWorkerMessage = (event) => {
    const message = event.data ?? {};
    if (message.type === "foresight:token") {
      event.ports[0]?.postMessage({ token: this.#token });
    } else if (message.type === "foresight:served") {
      this.#onServed(message);
    }
  };

  async #onServed({ content_id, version, outcome, latency_ms, status }) {
    if (outcome === "hit") {
      if (await this.#serial(() => this.#markUsed(content_id, version))) {
        this.#feedback(content_id, version, "hit", latency_ms);
      }
    } else if (outcome === "miss" && status === 200 && version !== null) {
      this.#feedback(content_id, version, "miss", latency_ms);
    }
    this.#emit("served", { content_id, version, outcome, latency_ms, status });
  }

  #feedback(content_id, version, outcome, latency_ms) {
    const message = { type: "feedback", content_id, version, outcome, latency_ms: Math.max(0, latency_ms), ts: now() };
    if (this.#state !== "connected" || !this.#send(message)) {
      if (this.#outbox.length < MAX_QUEUED_FEEDBACK) this.#outbox.push(message);
      return;
    }
    this.#emit("feedback", message);
  }

  #flushFeedback() {
    const waiting = this.#outbox.splice(0);
    for (const message of waiting) {
      if (this.#send(message)) this.#emit("feedback", message);
      else this.#outbox.push(message);
    }
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.#emit("state", { state, ...detail });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
