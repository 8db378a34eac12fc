// The friends demo page: log in as a player, show the connection state, the
// friends with where they are online (live, from onFriendOnline pushes) and
// a log of notices. Uses luahost.js only.
import { login, connect } from "./luahost.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const password = params.get("password") || "demo";
let client = null;

// what the test (and a curious person) can read
window.luahostPage = { times: {}, client: null };

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("#log").append(li);
  $("#log").scrollTop = $("#log").scrollHeight;
}

function setState(s) {
  const el = $("#state");
  el.textContent = s;
  el.className = s;
}

function friendItem(rid) {
  let li = $(`#friends li[data-rid="${rid}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.rid = String(rid);
    li.dataset.online = "false";
    li.innerHTML = `<span class="name"></span><span class="where"></span>`;
    li.querySelector(".name").textContent = `player ${rid}`;
    $("#friends").append(li);
  }
  return li;
}

function showFriend(rid, online, hall) {
  const li = friendItem(rid);
  li.dataset.online = online ? "true" : "false";
  li.dataset.changedAt = String(Date.now());
  li.querySelector(".where").textContent = online ? (hall ? `online (hall ${hall})` : "online") : "offline";
}

async function refreshFriends() {
  const [friends] = await client.call("hall_getFriends");
  const keep = new Set(friends.map((f) => String(f.rid)));
  for (const li of [...$("#friends").children]) if (!keep.has(li.dataset.rid)) li.remove();
  friends.sort((a, b) => a.rid - b.rid);
  for (const f of friends) showFriend(f.rid, f.hall !== 0, f.hall);
  window.luahostPage.times.friends = Date.now();
}

// failures worth trying again (the server may still be starting)
const RETRY = new Set(["connect", "http", "no_backend", "busy", "timeout", "closed"]);

async function start(account, tries = 30) {
  const again = (e) => {
    if (!RETRY.has(e.code) || tries <= 1) return false;
    setTimeout(() => start(account, tries - 1), 1000);
    return true;
  };
  if (client) client.close();
  client = null;
  $("#friends").replaceChildren();
  setState("connecting");
  const t0 = Date.now();
  window.luahostPage.times = { start: t0 };
  let s;
  try {
    s = await login(account, password);
  } catch (e) {
    setState("offline");
    log(`login failed: ${e.code}: ${e.text}${again(e) ? " (trying again)" : ""}`);
    return;
  }
  $("#me").textContent = `as ${s.account}`;
  try {
    client = await connect({
      ...s,
      getToken: async () => (await login(account, password)).token,
      onState(state, info) {
        setState(state);
        if (state === "online") {
          window.luahostPage.times.online ??= Date.now();
          log(info && info.resumed ? "online again (session resumed)" : "online");
          // after a fresh login the server's view may have changed
          if (client) refreshFriends().catch((e) => log(`hall_getFriends failed: ${e.code}: ${e.text}`));
        } else if (info && info.code) log(`${state}: ${info.code}${info.text ? ": " + info.text : ""}`);
      },
      onPush(name, args) {
        if (name === "onFriendOnline") {
          const [rid, online] = args;
          showFriend(rid, online, 0);
          log(`friend ${rid} is ${online ? "online" : "offline"}`);
          if (online) refreshFriends().catch(() => {}); // to learn its hall
        } else if (name === "onNotice") {
          log(`notice: ${args[0]}`);
        } else log(`push ${name} ${JSON.stringify(args)}`);
      },
      onNotice(code, text, closing) {
        log(`gate: ${code}${text ? ": " + text : ""}${closing ? " (closing)" : ""}`);
      },
    });
  } catch (e) {
    setState("offline");
    log(`connect failed: ${e.code}: ${e.text}${again(e) ? " (trying again)" : ""}`);
    return;
  }
  window.luahostPage.client = client;
  await refreshFriends().catch((e) => log(`hall_getFriends failed: ${e.code}: ${e.text}`));
}

const sel = $("#player");
for (let rid = 1001; rid <= 1020; rid++) sel.append(new Option(String(rid), String(rid)));
const wanted = params.get("player");
if (wanted) sel.value = wanted;
$("#login").onclick = () => {
  const u = new URL(location.href);
  u.searchParams.set("player", sel.value);
  history.replaceState(null, "", u);
  start(sel.value);
};
$("#add").onclick = async () => {
  const rid = Number($("#addRid").value);
  if (!client || !rid) return;
  try {
    const [ok] = await client.call("hall_addFriend", rid);
    log(ok ? `added friend ${rid}` : `could not add ${rid}`);
    await refreshFriends();
  } catch (e) {
    log(`hall_addFriend failed: ${e.code}: ${e.text}`);
  }
};
if (wanted) start(wanted);
