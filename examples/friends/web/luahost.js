// luahost.js: a browser client of a luahost Gate (docs/protocol.md).
// An ES module with no dependencies and no build step:
//
//   import { login, connect } from "./luahost.js";
//   const s = await login("1001", "demo");          // POST /luahost/login + GET /luahost/config.json
//   const c = await connect({ ...s, onPush, onNotice, onState });
//   const [friends] = await c.call("hall_getFriends");  // [{rid, hall}, ...]
//   c.send("someOneWayMethod", 1, 2);
//
// MessagePack (the subset the protocol uses), frames of seed 003 (one per
// WebSocket binary message; fragments reassembled), verify, calls by client
// id typed by config.json, pushes with acks, heartbeat pings, and reconnect
// with resume (a fresh login when the Gate says resume_expired).

// ---------------------------------------------------------------- MessagePack

const te = new TextEncoder();
const td = new TextDecoder();

/** A number that must be encoded as a float even when it is integral. */
export class Float {
  constructor(v) {
    this.value = Number(v);
  }
}

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }
  u8(v) {
    this.reserve(1);
    this.buf[this.len++] = v;
  }
  u16(v) {
    this.reserve(2);
    this.view.setUint16(this.len, v);
    this.len += 2;
  }
  u32(v) {
    this.reserve(4);
    this.view.setUint32(this.len, v);
    this.len += 4;
  }
  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  result() {
    return this.buf.slice(0, this.len);
  }
}

function putInt(w, v) {
  // v: an integral Number or a BigInt
  if (typeof v === "bigint") {
    if (v >= -(2n ** 31n) && v < 2n ** 32n) return putInt(w, Number(v));
    if (v < 0n) {
      if (v < -(2n ** 63n)) throw new RangeError(`${v} does not fit in int64`);
      w.u8(0xd3);
      w.reserve(8);
      w.view.setBigInt64(w.len, v);
    } else {
      if (v >= 2n ** 64n) throw new RangeError(`${v} does not fit in uint64`);
      w.u8(0xcf);
      w.reserve(8);
      w.view.setBigUint64(w.len, v);
    }
    w.len += 8;
    return;
  }
  if (v >= 0) {
    if (v < 0x80) w.u8(v);
    else if (v < 0x100) {
      w.u8(0xcc);
      w.u8(v);
    } else if (v < 0x10000) {
      w.u8(0xcd);
      w.u16(v);
    } else if (v < 0x100000000) {
      w.u8(0xce);
      w.u32(v);
    } else return putInt(w, BigInt(v));
  } else {
    if (v >= -32) w.u8(v & 0xff);
    else if (v >= -128) {
      w.u8(0xd0);
      w.u8(v & 0xff);
    } else if (v >= -32768) {
      w.u8(0xd1);
      w.u16(v & 0xffff);
    } else if (v >= -2147483648) {
      w.u8(0xd2);
      w.u32(v >>> 0);
    } else return putInt(w, BigInt(v));
  }
}

function putFloat(w, v) {
  w.u8(0xcb);
  w.reserve(8);
  w.view.setFloat64(w.len, v);
  w.len += 8;
}

function putStr(w, s) {
  const b = te.encode(s);
  const n = b.length;
  if (n < 32) w.u8(0xa0 | n);
  else if (n < 0x100) {
    w.u8(0xd9);
    w.u8(n);
  } else if (n < 0x10000) {
    w.u8(0xda);
    w.u16(n);
  } else {
    w.u8(0xdb);
    w.u32(n);
  }
  w.bytes(b);
}

function putBin(w, b) {
  const n = b.length;
  if (n < 0x100) {
    w.u8(0xc4);
    w.u8(n);
  } else if (n < 0x10000) {
    w.u8(0xc5);
    w.u16(n);
  } else {
    w.u8(0xc6);
    w.u32(n);
  }
  w.bytes(b);
}

function putArrayLen(w, n) {
  if (n < 16) w.u8(0x90 | n);
  else if (n < 0x10000) {
    w.u8(0xdc);
    w.u16(n);
  } else {
    w.u8(0xdd);
    w.u32(n);
  }
}

function putMapLen(w, n) {
  if (n < 16) w.u8(0x80 | n);
  else if (n < 0x10000) {
    w.u8(0xde);
    w.u16(n);
  } else {
    w.u8(0xdf);
    w.u32(n);
  }
}

function putValue(w, v) {
  if (v === null || v === undefined) w.u8(0xc0);
  else if (v === false) w.u8(0xc2);
  else if (v === true) w.u8(0xc3);
  else if (typeof v === "number") {
    if (Number.isInteger(v) && Number.isSafeInteger(v)) putInt(w, v);
    else putFloat(w, v);
  } else if (typeof v === "bigint") putInt(w, v);
  else if (typeof v === "string") putStr(w, v);
  else if (v instanceof Float) putFloat(w, v.value);
  else if (v instanceof Uint8Array) putBin(w, v);
  else if (v instanceof ArrayBuffer) putBin(w, new Uint8Array(v));
  else if (Array.isArray(v)) {
    putArrayLen(w, v.length);
    for (const x of v) putValue(w, x);
  } else if (v instanceof Map) {
    putMapLen(w, v.size);
    for (const [k, x] of v) {
      putValue(w, k);
      putValue(w, x);
    }
  } else if (typeof v === "object") {
    const keys = Object.keys(v);
    putMapLen(w, keys.length);
    for (const k of keys) {
      putValue(w, k);
      putValue(w, v[k]);
    }
  } else throw new TypeError(`cannot encode ${typeof v}`);
}

/** Encodes one value as MessagePack. Integral Numbers become ints, other
 * Numbers float64 (wrap in `Float` to force a float), BigInt int64/uint64,
 * Uint8Array bin, Array array, Map or plain object map. */
export function encode(value) {
  const w = new Writer();
  putValue(w, value);
  return w.result();
}

class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  need(n) {
    if (this.pos + n > this.b.length) throw new RangeError("MessagePack: truncated");
  }
  u8() {
    this.need(1);
    return this.b[this.pos++];
  }
  u16() {
    this.need(2);
    const v = this.view.getUint16(this.pos);
    this.pos += 2;
    return v;
  }
  u32() {
    this.need(4);
    const v = this.view.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  take(n) {
    this.need(n);
    const s = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  big(signed) {
    this.need(8);
    const v = signed ? this.view.getBigInt64(this.pos) : this.view.getBigUint64(this.pos);
    this.pos += 8;
    // a Number when it is exact, else the BigInt
    return v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n ? Number(v) : v;
  }
  value() {
    const t = this.u8();
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if ((t & 0xf0) === 0x80) return this.map(t & 0x0f);
    if ((t & 0xf0) === 0x90) return this.array(t & 0x0f);
    if ((t & 0xe0) === 0xa0) return td.decode(this.take(t & 0x1f));
    let v;
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.take(this.u8()).slice();
      case 0xc5:
        return this.take(this.u16()).slice();
      case 0xc6:
        return this.take(this.u32()).slice();
      case 0xca:
        this.need(4);
        v = this.view.getFloat32(this.pos);
        this.pos += 4;
        return v;
      case 0xcb:
        this.need(8);
        v = this.view.getFloat64(this.pos);
        this.pos += 8;
        return v;
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf:
        return this.big(false);
      case 0xd0:
        return (this.u8() << 24) >> 24;
      case 0xd1:
        return (this.u16() << 16) >> 16;
      case 0xd2:
        return this.u32() | 0;
      case 0xd3:
        return this.big(true);
      case 0xd9:
        return td.decode(this.take(this.u8()));
      case 0xda:
        return td.decode(this.take(this.u16()));
      case 0xdb:
        return td.decode(this.take(this.u32()));
      case 0xdc:
        return this.array(this.u16());
      case 0xdd:
        return this.array(this.u32());
      case 0xde:
        return this.map(this.u16());
      case 0xdf:
        return this.map(this.u32());
      default:
        throw new TypeError(`MessagePack: unsupported type byte 0x${t.toString(16)}`);
    }
  }
  array(n) {
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = this.value();
    return a;
  }
  map(n) {
    // string and number keys give a plain object; others a Map
    const entries = [];
    let plain = true;
    for (let i = 0; i < n; i++) {
      const k = this.value();
      const v = this.value();
      if (typeof k !== "string" && typeof k !== "number") plain = false;
      entries.push([k, v]);
    }
    if (!plain) return new Map(entries);
    const o = {};
    for (const [k, v] of entries) o[k] = v;
    return o;
  }
}

/** Decodes one MessagePack value (the whole input must be that value).
 * Ints come back as Numbers when exact, else BigInt; str as string; bin as
 * Uint8Array; maps as plain objects (string/number keys) or Maps. */
export function decode(bytes) {
  const r = new Reader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  const v = r.value();
  if (r.pos !== r.b.length) throw new RangeError("MessagePack: trailing bytes");
  return v;
}

// ---------------------------------------------------------------- frames

export const FRAGMENT = 32 * 1024;
const FLAG_WHOLE = 0x80;
const FLAG_FIRST = 0x81;
const FLAG_MIDDLE = 0x82;
const FLAG_LAST = 0x83;

function frame(flag, session, data) {
  const f = new Uint8Array(7 + data.length);
  const v = new DataView(f.buffer);
  v.setUint16(0, 5 + data.length);
  f[2] = flag;
  v.setUint32(3, session >>> 0);
  f.set(data, 7);
  return f;
}

/** Cuts a message into frames (one per WebSocket message): one 0x80 frame
 * up to 32 KiB, else 0x81, 0x82..., 0x83 pieces of 32 KiB. */
export function encodeFrames(session, data) {
  if (data.length <= FRAGMENT) return [frame(FLAG_WHOLE, session, data)];
  const out = [];
  for (let off = 0; off < data.length; off += FRAGMENT) {
    const piece = data.subarray(off, Math.min(off + FRAGMENT, data.length));
    const flag = off === 0 ? FLAG_FIRST : off + FRAGMENT >= data.length ? FLAG_LAST : FLAG_MIDDLE;
    out.push(frame(flag, session, piece));
  }
  return out;
}

/** Reassembles frames into messages {session, data}. Feed it bytes (each
 * WebSocket message; bytes may also be a stream cut anywhere, as over TCP). */
export class FrameDecoder {
  constructor(maxMessage = 16 * 1024 * 1024) {
    this.max = maxMessage;
    this.buf = new Uint8Array(0);
    this.parts = null; // {session, chunks, size} while a fragmented message is open
  }
  /** Returns the whole messages completed by `bytes`; throws on a bad frame. */
  push(bytes) {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    if (this.buf.length) {
      const j = new Uint8Array(this.buf.length + b.length);
      j.set(this.buf);
      j.set(b, this.buf.length);
      this.buf = j;
    } else this.buf = b;
    const out = [];
    let pos = 0;
    while (this.buf.length - pos >= 2) {
      const len = (this.buf[pos] << 8) | this.buf[pos + 1];
      if (len < 5) throw new RangeError(`bad frame: length ${len}`);
      if (this.buf.length - pos < 2 + len) break;
      const flag = this.buf[pos + 2];
      const session =
        ((this.buf[pos + 3] << 24) | (this.buf[pos + 4] << 16) | (this.buf[pos + 5] << 8) | this.buf[pos + 6]) >>> 0;
      const data = this.buf.slice(pos + 7, pos + 2 + len);
      pos += 2 + len;
      if (flag === FLAG_WHOLE) {
        if (this.parts) throw new RangeError("bad frame: whole frame inside a fragmented message");
        out.push({ session, data });
      } else if (flag === FLAG_FIRST) {
        if (this.parts) throw new RangeError("bad frame: two first fragments");
        this.parts = { session, chunks: [data], size: data.length };
      } else if (flag === FLAG_MIDDLE || flag === FLAG_LAST) {
        const p = this.parts;
        if (!p || p.session !== session) throw new RangeError("bad frame: fragment without its first");
        p.chunks.push(data);
        p.size += data.length;
        if (p.size > this.max) throw new RangeError("bad frame: message too long");
        if (flag === FLAG_LAST) {
          const whole = new Uint8Array(p.size);
          let o = 0;
          for (const c of p.chunks) {
            whole.set(c, o);
            o += c.length;
          }
          this.parts = null;
          out.push({ session, data: whole });
        }
      } else throw new RangeError(`bad frame: flag 0x${flag.toString(16)}`);
    }
    this.buf = this.buf.slice(pos);
    return out;
  }
}

// ---------------------------------------------------------------- schema types

const INT_RANGES = {
  int8: [-(2n ** 7n), 2n ** 7n - 1n],
  int16: [-(2n ** 15n), 2n ** 15n - 1n],
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  int48: [-(2n ** 47n), 2n ** 47n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint8: [0n, 2n ** 8n - 1n],
  uint16: [0n, 2n ** 16n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
};

function splitTop(s) {
  // "K,V" at depth 0
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "<") depth++;
    else if (s[i] === ">") depth--;
    else if (s[i] === "," && depth === 0) return [s.slice(0, i).trim(), s.slice(i + 1).trim()];
  }
  throw new TypeError(`bad map type ${s}`);
}

/** Converts a JS value to what MessagePack must carry for schema type `ty`
 * (structs: objects to arrays in field order). Throws a TypeError naming
 * `where` when the value does not fit. */
function toWire(ty, v, structs, where) {
  ty = ty.trim();
  if (ty.endsWith("?")) return v === null || v === undefined ? null : toWire(ty.slice(0, -1), v, structs, where);
  const bad = (what) => {
    throw new TypeError(`${where}: ${what}`);
  };
  if (INT_RANGES[ty]) {
    if (typeof v === "number" && !Number.isInteger(v)) bad(`expected ${ty}, got ${v}`);
    if (typeof v !== "number" && typeof v !== "bigint") bad(`expected ${ty}, got ${typeof v}`);
    const [lo, hi] = INT_RANGES[ty];
    const b = BigInt(v);
    if (b < lo || b > hi) bad(`${v} is out of range for ${ty}`);
    return typeof v === "number" && !Number.isSafeInteger(v) ? b : v;
  }
  switch (ty) {
    case "float":
    case "double":
      if (typeof v !== "number") bad(`expected ${ty}, got ${typeof v}`);
      return new Float(v);
    case "bool":
      if (typeof v !== "boolean") bad(`expected bool, got ${typeof v}`);
      return v;
    case "string":
      if (typeof v !== "string") bad(`expected string, got ${typeof v}`);
      return v;
    case "bytes":
      if (typeof v === "string") return te.encode(v);
      if (!(v instanceof Uint8Array)) bad(`expected bytes (Uint8Array), got ${typeof v}`);
      return v;
  }
  if (ty.startsWith("array<") && ty.endsWith(">")) {
    if (!Array.isArray(v)) bad(`expected ${ty}`);
    const et = ty.slice(6, -1);
    return v.map((x, i) => toWire(et, x, structs, `${where}[${i + 1}]`));
  }
  if (ty.startsWith("map<") && ty.endsWith(">")) {
    const [kt, vt] = splitTop(ty.slice(4, -1));
    const entries = v instanceof Map ? [...v] : Object.entries(v ?? bad(`expected ${ty}`));
    const keyIsInt = !!INT_RANGES[kt];
    return new Map(
      entries.map(([k, x]) => [
        toWire(kt, keyIsInt && typeof k === "string" ? Number(k) : k, structs, `${where} key`),
        toWire(vt, x, structs, `${where}[${k}]`),
      ]),
    );
  }
  const fields = structs[ty];
  if (!fields) bad(`unknown type ${ty}`);
  if (v === null || typeof v !== "object") bad(`expected ${ty}`);
  return fields.map(([name, fty], i) => toWire(fty, Array.isArray(v) ? v[i] : v[name], structs, `${where}.${name}`));
}

/** Converts a decoded MessagePack value of schema type `ty` for JS: structs
 * become objects with their field names. */
function fromWire(ty, v, structs) {
  ty = ty.trim();
  if (ty.endsWith("?")) return v === null ? null : fromWire(ty.slice(0, -1), v, structs);
  if (ty === "bytes" && typeof v === "string") return te.encode(v);
  if (ty === "string" && v instanceof Uint8Array) return td.decode(v);
  if (ty.startsWith("array<") && ty.endsWith(">") && Array.isArray(v)) {
    const et = ty.slice(6, -1);
    return v.map((x) => fromWire(et, x, structs));
  }
  if (ty.startsWith("map<") && ty.endsWith(">") && v && typeof v === "object") {
    const [, vt] = splitTop(ty.slice(4, -1));
    if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, fromWire(vt, x, structs)]));
    const o = {};
    for (const k of Object.keys(v)) o[k] = fromWire(vt, v[k], structs);
    return o;
  }
  const fields = structs[ty];
  if (fields && Array.isArray(v)) {
    const o = {};
    fields.forEach(([name, fty], i) => (o[name] = fromWire(fty, v[i], structs)));
    return o;
  }
  return v;
}

// ---------------------------------------------------------------- the client

const K_VERIFY = 0;
const K_VERIFY_OK = 1;
const K_VERIFY_FAILED = 2;
const K_CALL = 3;
const K_SEND = 4;
const K_REPLY = 5;
const K_PING = 6;
const K_PONG = 7;
const K_PUSH = 8;
const K_ACK = 9;
const K_NOTICE = 10;

// verify-failed codes after which trying again cannot help
const FATAL_VERIFY = new Set(["bad_token", "expired", "digest", "refused", "malformed"]);
// notices after which the client does not reconnect
const FINAL_NOTICE = new Set(["replaced", "kicked"]);

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const ACK_EVERY = 64;

/** Logs in over HTTP: POST /luahost/login, then GET /luahost/config.json.
 * Resolves to {account, token, ws, config, clientDigi}; rejects with
 * {code, text} (code "refused" for a 403). `base`: the server's URL
 * (default: this page's origin). */
export async function login(account, password, { base = "" } = {}) {
  let r;
  try {
    r = await fetch(`${base}/luahost/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ account: String(account), password }),
    });
  } catch (e) {
    throw { code: "connect", text: String(e) };
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok || !body.ok) throw { code: r.status === 403 ? "refused" : "http", text: body.reason || `HTTP ${r.status}` };
  const config = await fetchConfig(base);
  return { account: body.account, token: body.token, ws: body.ws || config.ws, config, clientDigi: config.client_digi };
}

/** GET /luahost/config.json: method and push ids and types, ClientDigi, heartbeat. */
export async function fetchConfig(base = "") {
  const r = await fetch(`${base}/luahost/config.json`);
  if (!r.ok) throw { code: "http", text: `config.json: HTTP ${r.status}` };
  return r.json();
}

/** Connects, verifies, and resolves to a client once online:
 *
 *   call(name, ...args)  -> Promise of the results array (structs as objects);
 *                           rejects with {code, text}
 *   send(name, ...args)  -> one-way; throws a TypeError for bad arguments
 *   close()              -> closes for good (the server learns it after its resume grace)
 *   state, session       -> "online" | "connecting" | "offline"; {id, heartbeatMs, resumed}
 *
 * Options: ws (URL), account, token, clientDigi, config (config.json; fetched
 * from this page's origin when absent), onPush(name, args, seq) with args
 * typed (structs as objects), onNotice(code, text, closing),
 * onState(state, info), getToken() (optional: a fresh token for a fresh
 * login, e.g. after `expired`), WebSocket (optional constructor).
 *
 * After a lost connection it reconnects (0.5 s backoff doubling to 5 s) and
 * resumes the session (pushes after the last one received are replayed); when
 * the Gate answers resume_expired it logs in afresh with the same token.
 * Calls in flight when a connection drops reject with {code: "closed"};
 * calls made while not online reject with {code: "offline"}.
 * The first connect rejects with {code, text} when it fails. */
export async function connect(opts) {
  const config = opts.config || (await fetchConfig());
  const c = new Client({ ...opts, config });
  await c._start();
  return c;
}

class Client {
  constructor(o) {
    this.url = o.ws || o.config.ws;
    this.account = String(o.account);
    this.token = o.token;
    this.config = o.config;
    this.clientDigi = o.clientDigi ?? o.config.client_digi;
    this.onPush = o.onPush || (() => {});
    this.onNotice = o.onNotice || (() => {});
    this.onState = o.onState || (() => {});
    this.getToken = o.getToken;
    this.WS = o.WebSocket || globalThis.WebSocket;
    this.structs = o.config.structs || {};
    this.methods = o.config.methods || {};
    this.pushes = {};
    for (const [name, p] of Object.entries(o.config.pushes || {})) this.pushes[p.cid] = { name, ...p };
    this.state = "offline";
    this.session = null; // {id, resumeToken, heartbeatMs, resumed}
    this.lastSeq = 0;
    this.ackedSeq = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.sock = null;
    this.closed = false;
    this.backoff = BACKOFF_FIRST_MS;
    this.retryTimer = null;
    this.beatTimer = null;
    this.lastSent = 0;
    this.lastRecv = 0;
  }

  _setState(s, info) {
    if (this.state === s && !info) return;
    this.state = s;
    try {
      this.onState(s, info);
    } catch (e) {
      console.error("onState", e);
    }
  }

  _start() {
    return new Promise((resolve, reject) => {
      this._attempt({ resolve, reject });
    });
  }

  // One connection attempt; `first` carries the promise of connect().
  _attempt(first) {
    this.retryTimer = null;
    if (this.closed) return;
    this._setState("connecting");
    const resume = this.session ? this.session : null;
    let ws;
    try {
      ws = new this.WS(this.url);
    } catch (e) {
      return this._lost(first, { code: "connect", text: String(e) });
    }
    ws.binaryType = "arraybuffer";
    this.sock = ws;
    const dec = new FrameDecoder();
    let verified = false;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      clearInterval(this.beatTimer);
      this.beatTimer = null;
      if (this.sock === ws) this.sock = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
      this._lost(verified ? null : first, err);
    };
    ws.onopen = () => {
      const v = [K_VERIFY, this.account, this.token, this.clientDigi];
      if (resume) v.push(resume.id, resume.resumeToken, this.lastSeq);
      this._write(0, v, ws);
    };
    ws.onerror = () => finish({ code: "connect", text: `cannot connect to ${this.url}` });
    ws.onclose = (ev) => finish(ev.__err || { code: "closed", text: `connection closed (${ev.code})` });
    ws.onmessage = (ev) => {
      if (done) return;
      if (typeof ev.data === "string") return finish({ code: "protocol", text: "text message from the Gate" });
      let msgs;
      try {
        msgs = dec.push(new Uint8Array(ev.data));
      } catch (e) {
        return finish({ code: "protocol", text: String(e.message || e) });
      }
      this.lastRecv = Date.now();
      for (const m of msgs) {
        let msg;
        try {
          msg = decode(m.data);
          if (!Array.isArray(msg)) throw new TypeError("message is not an array");
        } catch (e) {
          return finish({ code: "protocol", text: String(e.message || e) });
        }
        if (!verified) {
          if (msg[0] === K_VERIFY_OK) {
            verified = true;
            const [, id, resumeToken, heartbeatMs, resumed] = msg;
            if (!resumed) {
              this.lastSeq = 0;
              this.ackedSeq = 0;
            }
            this.session = {
              id,
              resumeToken,
              heartbeatMs: Math.max(100, heartbeatMs || this.config.heartbeat_ms || 10000),
              resumed: !!resumed,
            };
            this.backoff = BACKOFF_FIRST_MS;
            this._startHeartbeat(ws);
            this._setState("online", { resumed: !!resumed, sessionId: id });
            if (first) first.resolve();
            first = null;
            continue;
          }
          if (msg[0] === K_VERIFY_FAILED) {
            const err = { code: String(msg[1]), text: String(msg[2] ?? "") };
            if (err.code === "resume_expired" && this.session) {
              // the session is gone: log in afresh with the same token
              this.session = null;
              this.lastSeq = 0;
              this.ackedSeq = 0;
              this.backoff = BACKOFF_FIRST_MS;
              err.retryNow = true;
            }
            return finish(err);
          }
          return finish({ code: "protocol", text: `expected a verify answer, got kind ${msg[0]}` });
        }
        this._onMessage(m.session, msg, ws);
      }
    };
  }

  // The connection `first` was trying (or the online one) is gone.
  _lost(first, err) {
    for (const [, p] of this.pending) p.reject({ code: "closed", text: "connection lost before the reply" });
    this.pending.clear();
    if (first) {
      // the first connect() fails at once; later attempts retry unless hopeless
      this.closed = true;
      this._setState("offline", { ...err, final: true });
      return first.reject(err);
    }
    if (this.closed) return this._setState("offline", err);
    if (err && (FATAL_VERIFY.has(err.code) || err.final)) {
      if (err.code === "expired" && this.getToken && !err.tokenRefreshed) {
        // a fresh token, then a fresh login
        this._setState("offline", err);
        Promise.resolve(this.getToken()).then(
          (t) => {
            this.token = t;
            this.session = null;
            this._schedule(0);
          },
          () => {
            this.closed = true;
            this._setState("offline", { ...err, final: true });
          },
        );
        return;
      }
      this.closed = true;
      return this._setState("offline", { ...err, final: true });
    }
    this._setState("offline", err);
    if (err && err.retryNow) return this._schedule(0);
    this._schedule(this.backoff);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
  }

  _schedule(ms) {
    if (this.closed || this.retryTimer) return;
    this.retryTimer = setTimeout(() => this._attempt(null), ms);
  }

  _startHeartbeat(ws) {
    const hb = this.session.heartbeatMs;
    this.lastSent = Date.now();
    this.lastRecv = Date.now();
    clearInterval(this.beatTimer);
    this.beatTimer = setInterval(
      () => {
        if (this.sock !== ws) return;
        const now = Date.now();
        if (now - this.lastRecv > 3 * hb) {
          // nothing heard for three heartbeats: the connection is dead
          ws.onclose({ __err: { code: "idle", text: "no answer from the Gate" } });
          return;
        }
        if (this.lastSeq !== this.ackedSeq) this._ack(ws);
        else if (now - this.lastSent >= hb / 2) this._write(0, [K_PING], ws);
      },
      Math.max(50, Math.floor(hb / 4)),
    );
  }

  _ack(ws) {
    this.ackedSeq = this.lastSeq;
    this._write(0, [K_ACK, this.lastSeq], ws);
  }

  _write(session, msg, ws = this.sock) {
    if (!ws || ws.readyState !== 1) return false;
    for (const f of encodeFrames(session, encode(msg))) ws.send(f);
    this.lastSent = Date.now();
    return true;
  }

  _onMessage(session, msg, ws) {
    switch (msg[0]) {
      case K_REPLY: {
        const p = this.pending.get(session);
        if (!p) return;
        this.pending.delete(session);
        if (msg[1] === 0) {
          const types = p.method.results || [];
          p.resolve(msg.slice(2).map((v, i) => (types[i] ? fromWire(types[i][1], v, this.structs) : v)));
        } else p.reject({ code: String(msg[2]), text: String(msg[3] ?? "") });
        return;
      }
      case K_PUSH: {
        const seq = msg[1];
        if (seq <= this.lastSeq) return; // already seen (replayed after a resume)
        this.lastSeq = seq;
        const p = this.pushes[msg[2]];
        const raw = msg.slice(3);
        const name = p ? p.name : `#${msg[2]}`;
        const args = p ? raw.map((v, i) => (p.args[i] ? fromWire(p.args[i][1], v, this.structs) : v)) : raw;
        try {
          this.onPush(name, args, seq);
        } catch (e) {
          console.error("onPush", name, e);
        }
        if (this.lastSeq - this.ackedSeq >= ACK_EVERY) this._ack(ws);
        return;
      }
      case K_NOTICE: {
        const [, code, text, closing] = msg;
        try {
          this.onNotice(String(code), String(text ?? ""), !!closing);
        } catch (e) {
          console.error("onNotice", e);
        }
        if (closing && FINAL_NOTICE.has(code)) {
          this.closed = true;
          this._setState("offline", { code, text, final: true });
          try {
            ws.close();
          } catch {
            // already closed
          }
        }
        return;
      }
      case K_PONG:
        return;
      default:
        return; // unknown kinds are ignored
    }
  }

  _encodeArgs(name, m, args) {
    const types = m.args || [];
    if (args.length > types.length) throw new TypeError(`${name}: ${types.length} arguments, got ${args.length}`);
    return types.map(([an, ty], i) => toWire(ty, args[i], this.structs, `${name}(${an})`));
  }

  /** Calls a method of the server; resolves to its results (an array). */
  call(name, ...args) {
    const m = this.methods[name];
    if (!m) return Promise.reject({ code: "bad_request", text: `no client method ${name}` });
    let wire;
    try {
      wire = this._encodeArgs(name, m, args);
    } catch (e) {
      return Promise.reject({ code: "bad_request", text: e.message });
    }
    if (this.state !== "online" || !this.sock) return Promise.reject({ code: "offline", text: "not connected" });
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method: m });
      this._write(id, [K_CALL, m.cid, ...wire]);
    });
  }

  /** Sends a one-way message; returns false when not connected. */
  send(name, ...args) {
    const m = this.methods[name];
    if (!m) throw new TypeError(`no client method ${name}`);
    const wire = this._encodeArgs(name, m, args);
    if (this.state !== "online") return false;
    return this._write(0, [K_SEND, m.cid, ...wire]);
  }

  /** Closes for good. */
  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.beatTimer);
    const ws = this.sock;
    this.sock = null;
    if (ws) {
      ws.onclose = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
    for (const [, p] of this.pending) p.reject({ code: "closed", text: "client closed" });
    this.pending.clear();
    this._setState("offline", { code: "closed", text: "closed by the client", final: true });
  }
}
