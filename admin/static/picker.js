// The pickers' handheld page. It talks to the admin API like any client: the picker signs in,
// the bearer token is kept in sessionStorage (gone when the tab closes), and every call sends it.
// Text from the server is only ever set with textContent, never parsed as HTML.
"use strict";

(function () {
  const TOKEN = "conveyor.picker.token";
  const EMAIL = "conveyor.picker.email";
  const state = { list: null, line: null };

  const $ = (id) => document.getElementById(id);

  function say(text, kind) {
    const box = $("message");
    box.textContent = text || "";
    box.className = text ? kind || "ok" : "";
  }

  function show(view) {
    for (const id of ["login-view", "lists-view", "walk-view"]) {
      $(id).hidden = id !== view;
    }
    const signedIn = Boolean(sessionStorage.getItem(TOKEN));
    $("sign-out").hidden = !signedIn;
    $("who").textContent = signedIn ? sessionStorage.getItem(EMAIL) || "" : "";
  }

  class ApiError extends Error {
    constructor(status, body) {
      const error = body && body.error ? body.error : {};
      super(error.message || `The server answered ${status}.`);
      this.status = status;
      this.code = error.code || "";
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, { error: { message: "No connection to the server; try again." } });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (response.status === 401 && token) {
      signOut("Your session has ended: sign in again.");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(EMAIL);
    state.list = null;
    state.line = null;
    show("login-view");
    say(message || "", message ? "error" : "");
  }

  // -- signing in ------------------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const body = { email: $("email").value.trim(), password: $("password").value };
    const code = $("totp").value.trim();
    if (code) body.totp_code = code;
    try {
      const result = await api("POST", "/api/auth/login", body);
      sessionStorage.setItem(TOKEN, result.token);
      sessionStorage.setItem(EMAIL, body.email);
      $("password").value = "";
      $("totp").value = "";
      say("");
      await showLists();
    } catch (error) {
      say(error.message, "error");
    }
  }

  // -- the lists -------------------------------------------------------------------------------

  const count = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function describe(list) {
    return `List #${list.id} · ${list.warehouse} · ${count(list.lines, "line")} · ` +
      `${list.remaining} of ${count(list.units, "unit")} to pick · ${count(list.orders, "order")}`;
  }

  async function showLists() {
    show("lists-view");
    const me = sessionStorage.getItem(EMAIL) || "";
    try {
      const [mine, open] = await Promise.all([
        api("GET", `/api/picklists?status=claimed&claimed_by=${encodeURIComponent(me)}`),
        api("GET", "/api/picklists?status=open"),
      ]);
      const ul = $("lists");
      ul.replaceChildren();
      for (const [list, action] of [...mine.items.map((l) => [l, "Continue"]),
                                    ...open.items.map((l) => [l, "Claim"])]) {
        const li = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "claim";
        button.dataset.testid = `list-${list.id}`;
        button.textContent = `${action}: ${describe(list)}`;
        button.addEventListener("click", () => claim(list.id));
        li.append(button);
        ul.append(li);
      }
      $("no-lists").hidden = ul.children.length > 0;
    } catch (error) {
      say(error.message, "error");
    }
  }

  async function claim(id) {
    try {
      const detail = await api("POST", `/api/picklists/${id}/claim`);
      say(`List #${id} is yours.`);
      walk(detail);
    } catch (error) {
      say(error.message, "error");
      if (error.status === 409) await showLists();
    }
  }

  // -- walking a list --------------------------------------------------------------------------

  function walk(detail) {
    state.list = detail;
    state.line = detail.items.find((line) => line.remaining > 0) || null;
    show("walk-view");
    $("walk-title").textContent = `List #${detail.id} · ${detail.warehouse}`;
    const picked = detail.items.reduce((sum, line) => sum + line.picked, 0);
    const short = detail.items.reduce((sum, line) => sum + line.short, 0);
    $("progress").textContent = `${picked} picked, ${short} short, ${detail.remaining} to go ` +
      `(${detail.status})`;
    const line = state.line;
    $("current").hidden = !line;
    $("scan-form").hidden = !line;
    $("short-form").hidden = !line;
    $("all-done").hidden = Boolean(line);
    $("finish").hidden = Boolean(line) || detail.status !== "claimed";
    if (line) {
      $("bin").textContent = line.bin;
      $("sku").textContent = line.sku;
      $("product").textContent = `${line.product_name} · ${line.variant_name}`;
      $("wanted").textContent = String(line.remaining);
      $("quantity").value = String(line.remaining);
      $("quantity").max = String(line.remaining);
      $("found").value = "0";
      $("code").value = "";
      $("code").focus();
    }
    const ol = $("lines");
    ol.replaceChildren();
    for (const item of detail.items) {
      const li = document.createElement("li");
      li.textContent = `${item.bin} · ${item.sku} · ${item.product_name}: ` +
        `${item.picked} picked` + (item.short ? `, ${item.short} short` : "") +
        ` of ${item.quantity}`;
      if (item.done) li.className = "done";
      if (line && item.id === line.id) li.className = "now";
      ol.append(li);
    }
  }

  async function reload() {
    walk(await api("GET", `/api/picklists/${state.list.id}`));
  }

  function whole(id) {
    const value = Number($(id).value);
    return Number.isInteger(value) ? value : NaN;
  }

  async function confirmPick(event) {
    event.preventDefault();
    const line = state.line;
    const code = $("code").value.trim();
    const quantity = whole("quantity");
    if (!line) return;
    if (!code) return say("Scan or type the code first.", "error");
    if (!(quantity >= 1)) return say("The quantity must be a whole number, 1 or more.", "error");
    try {
      const result = await api("POST", `/api/picklists/${state.list.id}/scan`,
        { line_id: line.id, code, quantity });
      say(`Picked ${result.picked_now} × ${result.line.sku} from ${result.line.bin}.`);
      await reload();
    } catch (error) {
      say(error.message, "error");
      $("code").select();
    }
  }

  async function reportShort(event) {
    event.preventDefault();
    const line = state.line;
    const found = whole("found");
    if (!line) return;
    if (!(found >= 0)) return say("Found must be a whole number, 0 or more.", "error");
    try {
      const result = await api("POST",
        `/api/picklists/${state.list.id}/lines/${line.id}/short`, { found });
      const back = Object.values(result.reallocated).reduce((a, b) => a + b, 0);
      const later = Object.values(result.backordered).reduce((a, b) => a + b, 0);
      say(`Short ${result.short} × ${result.line.sku}: ${back} set aside in other bins, ` +
        `${later} backordered. Bin corrected.`);
      await reload();
    } catch (error) {
      say(error.message, "error");
    }
  }

  async function finish() {
    try {
      walk(await api("POST", `/api/picklists/${state.list.id}/complete`));
      say(`List #${state.list.id} is done.`);
    } catch (error) {
      say(error.message, "error");
    }
  }

  async function leave() {
    try {
      await api("POST", "/api/auth/logout");
    } catch (error) {
      // signed out here whatever the server says
    }
    signOut("");
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("refresh").addEventListener("click", showLists);
    $("scan-form").addEventListener("submit", confirmPick);
    $("short-form").addEventListener("submit", reportShort);
    $("finish").addEventListener("click", finish);
    $("back").addEventListener("click", showLists);
    $("sign-out").addEventListener("click", leave);
    if (sessionStorage.getItem(TOKEN)) {
      showLists();
    } else {
      show("login-view");
    }
  });
})();
