// flux-worker playground: plain JS, no build step, no dependencies.
// Loaded as a static file because the page's CSP forbids inline script.
// Server text is only ever shown through textContent, never innerHTML.
"use strict";

(function () {
  const KEY_STORAGE = "flux-worker.apiKey";
  const RECENT_STORAGE = "flux-worker.recent";
  const RECENT_MAX = 12;
  const RECENT_REFRESH_MS = 30000;
  // The reply ends with a markdown image: ![alt](url)
  const IMAGE_MARKDOWN = /!\[([^\]]*)\]\(([^)\s]+)\)/;

  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const els = {
    form: $("playground"),
    key: $("api-key"),
    prompt: $("prompt"),
    ratio: $("ratio"),
    customField: $("custom-ratio-field"),
    custom: $("custom-ratio"),
    model: $("model"),
    stream: $("stream"),
    generate: $("generate"),
    progress: $("progress"),
    result: $("result"),
    image: $("result-image"),
    download: $("download"),
    error: $("error"),
    recent: $("recent"),
    recentEmpty: $("recent-empty"),
    idle: $("idle"),
    picture: $("picture"),
    pictureChosen: $("picture-chosen"),
    picturePreview: $("picture-preview"),
    pictureClear: $("picture-clear"),
    editResult: $("edit-result"),
  };
  const PICTURE_MAX_BYTES = 20 * 1024 * 1024; // the server decodes pictures up to 20 MiB
  // The picture to change: {url} (a data: URL of a file, or one of our image links), or null.
  let picture = null;
  const expirationSeconds = Number(app.dataset.imageExpiration) || 1800;
  const defaultModel = app.dataset.defaultModel || "";

  // localStorage can throw (private mode, disabled storage): treat it as empty.
  function storageGet(name) {
    try { return window.localStorage.getItem(name); } catch (e) { return null; }
  }
  function storageSet(name, value) {
    try { window.localStorage.setItem(name, value); } catch (e) { /* not persisted */ }
  }

  // ---- errors -------------------------------------------------------------

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }
  function clearError() {
    els.error.textContent = "";
    els.error.hidden = true;
  }

  // Turn an OpenAI-style error (and the HTTP status, when there was one)
  // into a sentence a person can act on; never the raw JSON.
  function readableError(status, error, retryAfter) {
    const message = (error && typeof error.message === "string") ? error.message : "";
    const code = error && error.code;
    if (status === 401 || code === "invalid_api_key") {
      return "Wrong or missing API key. Check the key above (it must be one of the server's API_KEY values).";
    }
    if (code === "not_configured") {
      if (/API_KEY/.test(message)) return "This server has no API key set, so its API is closed. " + message;
      return "Workers AI is not configured on this server: the operator must set CF_ACCOUNT_ID and CF_API_TOKEN.";
    }
    if (status === 429 || code === "rate_limit_exceeded") {
      const seconds = parseInt(retryAfter, 10);
      return "Rate limited — try again in " + (seconds > 0 ? seconds : "a few") + " s." +
        (message ? " (" + message + ")" : "");
    }
    if (status === 504 || code === "upstream_timeout") {
      return "Cloudflare Workers AI timed out: " + (message || "no answer in time.");
    }
    if (status === 502 || code === "upstream_error" || code === "upstream_misconfigured" ||
        code === "upstream_auth_failed") {
      return "Cloudflare Workers AI failed: " + (message || "bad answer from upstream.");
    }
    if (code === "content_policy_violation") return message;
    if (message) return message;
    return status ? "The server answered HTTP " + status + "." : "Something went wrong.";
  }

  // Read an error response body; it should be JSON, but proxies send HTML.
  async function errorFromResponse(response) {
    let error = null;
    try {
      const body = await response.json();
      error = body && body.error;
    } catch (e) { /* not JSON: status alone decides */ }
    return readableError(response.status, error, response.headers.get("Retry-After"));
  }

  // ---- API key and models -------------------------------------------------

  function apiKey() {
    return els.key.value.trim();
  }

  function setModels(ids) {
    const previous = els.model.value;
    els.model.replaceChildren();
    for (const id of ids) {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id.split("/").pop(); // short name fits narrow screens
      option.title = id;
      els.model.appendChild(option);
    }
    // Keep the user's choice across refills when it is still offered.
    if (ids.includes(previous)) els.model.value = previous;
  }

  let modelsRequest = 0;
  async function loadModels() {
    const ticket = ++modelsRequest; // a later key change wins over a slow answer
    const key = apiKey();
    if (!key) {
      setModels([defaultModel]);
      return;
    }
    try {
      const response = await fetch("/v1/models", {
        headers: { Authorization: "Bearer " + key },
        cache: "no-store",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const body = await response.json();
      const ids = (body && Array.isArray(body.data) ? body.data : [])
        .map((model) => model && model.id)
        .filter((id) => typeof id === "string" && id);
      if (ticket === modelsRequest) setModels(ids.length ? ids : [defaultModel]);
    } catch (e) {
      // Wrong key or offline: the default model from the page still works.
      if (ticket === modelsRequest) setModels([defaultModel]);
    }
  }

  let keyTimer = null;
  function onKeyChanged() {
    storageSet(KEY_STORAGE, apiKey());
    clearTimeout(keyTimer);
    keyTimer = setTimeout(loadModels, 400); // do not fetch on every keystroke
  }

  // ---- ratio ----------------------------------------------------------------

  function onRatioChanged(event) {
    const custom = els.ratio.value === "custom";
    els.customField.hidden = !custom;
    if (custom && event) els.custom.focus(); // only when the user picked it
  }

  // Returns "W:H", or null (after showing an error) for a bad custom ratio.
  function chosenRatio() {
    if (els.ratio.value !== "custom") return els.ratio.value;
    const value = els.custom.value.trim().replace(/\s+/g, "");
    const match = /^(\d{1,4}):(\d{1,4})$/.exec(value);
    if (!match || Number(match[1]) === 0 || Number(match[2]) === 0) {
      showError("Enter the custom ratio as W:H, for example 4:3.");
      els.custom.focus();
      return null;
    }
    return match[1] + ":" + match[2];
  }

  // ---- the picture to change ------------------------------------------------------

  function setPicture(url) {
    picture = url ? { url: url } : null;
    els.pictureChosen.hidden = !picture;
    if (picture) {
      els.picturePreview.src = url;
      if (els.ratio.value === "1:1") els.ratio.value = "auto"; // keep the picture's shape
    } else {
      els.picturePreview.removeAttribute("src");
      els.picture.value = "";
    }
  }

  function readPicture(file) {
    if (!file) return;
    clearError();
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      showError("Choose a PNG, JPEG or WEBP picture.");
      return;
    }
    if (file.size > PICTURE_MAX_BYTES) {
      showError("That picture is over 20 MiB; choose a smaller one.");
      return;
    }
    const reader = new FileReader();
    reader.onload = () => setPicture(String(reader.result));
    reader.onerror = () => showError("The picture could not be read.");
    reader.readAsDataURL(file);
  }

  // The markdown image line is shown as the image itself, not as text.
  function progressText(content) {
    return content.replace(IMAGE_MARKDOWN, "").trimEnd();
  }

  // ---- result -----------------------------------------------------------------

  // Only http(s) links become an image; anything else (javascript:, data:) is refused.
  function safeImageUrl(raw) {
    try {
      const url = new URL(raw, window.location.href);
      return (url.protocol === "http:" || url.protocol === "https:") ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function showImage(content, prompt) {
    const match = IMAGE_MARKDOWN.exec(content);
    const url = match && safeImageUrl(match[2]);
    if (!url) {
      showError("The server answered without an image link.");
      return;
    }
    els.image.alt = "Generated image: " + prompt;
    els.image.onload = () => { els.result.hidden = false; };
    els.image.onerror = () => {
      els.result.hidden = true;
      showError("The image could not be loaded; it may have expired.");
    };
    els.image.src = url;
    els.download.href = url;
    addRecent(url, prompt);
  }

  // ---- streaming ----------------------------------------------------------------

  // Reads an SSE body; returns {content} or {error}. onText gets the text so far.
  async function readStream(response, onText) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let content = "";
    let error = null;
    let done = false;

    function handleBlock(block) {
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue; // keep-alive comments
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") { done = true; continue; }
        let event;
        try { event = JSON.parse(data); } catch (e) { continue; }
        if (event && event.error) { error = event.error; continue; }
        const choice = event && event.choices && event.choices[0];
        const piece = choice && choice.delta && choice.delta.content;
        if (typeof piece === "string" && piece) {
          content += piece;
          onText(content);
        }
      }
    }

    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += decoder.decode(value, { stream: true });
      // Events end with a blank line; keep the unfinished tail for later.
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      blocks.forEach(handleBlock);
    }
    buffer += decoder.decode();
    if (buffer.trim()) handleBlock(buffer);
    if (done) reader.cancel().catch(() => {});
    return { content, error, done };
  }

  // ---- generate ------------------------------------------------------------------

  let busy = false;
  async function generate(event) {
    event.preventDefault();
    if (busy) return;
    clearError();
    const prompt = els.prompt.value.trim();
    if (!prompt) {
      showError(picture ? "Say how to change the picture first." : "Write a prompt first.");
      els.prompt.focus();
      return;
    }
    const ratio = chosenRatio();
    if (!ratio) return;
    const key = apiKey();
    const stream = els.stream.checked;
    const words = ratio === "auto" ? prompt : prompt + " " + ratio;
    const content = picture
      ? [{ type: "text", text: words }, { type: "image_url", image_url: { url: picture.url } }]
      : words;
    const body = {
      model: els.model.value || defaultModel,
      stream: stream,
      messages: [{ role: "user", content: content }],
    };

    busy = true;
    els.idle.hidden = true;
    els.generate.disabled = true;
    els.generate.textContent = "Generating…";
    els.result.hidden = true;
    els.image.removeAttribute("src");
    els.progress.textContent = stream ? "Sending…" : "Generating (this takes a few seconds)…";
    let reached = false; // to tell "no connection" from "broken answer"
    try {
      const headers = { "Content-Type": "application/json" };
      if (key) headers.Authorization = "Bearer " + key;
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers,
        body: JSON.stringify(body),
        cache: "no-store",
      });
      reached = true;
      if (!response.ok) {
        els.progress.textContent = "";
        showError(await errorFromResponse(response));
        return;
      }
      let content;
      if (stream) {
        const outcome = await readStream(response, (text) => { els.progress.textContent = progressText(text); });
        if (outcome.error) {
          showError(readableError(null, outcome.error, null));
          return;
        }
        content = outcome.content;
        if (!outcome.done && !IMAGE_MARKDOWN.test(content)) {
          showError("The connection closed before the image was ready. Try again.");
          return;
        }
      } else {
        const reply = await response.json();
        const message = reply && reply.choices && reply.choices[0] && reply.choices[0].message;
        content = (message && typeof message.content === "string") ? message.content : "";
        els.progress.textContent = progressText(content);
      }
      showImage(content, prompt);
    } catch (e) {
      // fetch rejects only for network failures (offline, server gone, CORS);
      // after that, a throw means the answer broke off or was not JSON.
      showError(reached
        ? "The connection to the server broke or its answer was unreadable. Try again."
        : "Could not reach the server. Check your connection and try again.");
    } finally {
      busy = false;
      els.generate.disabled = false;
      els.generate.textContent = "Generate";
    }
  }

  // ---- recent images -------------------------------------------------------------

  function loadRecent() {
    try {
      const list = JSON.parse(storageGet(RECENT_STORAGE) || "[]");
      return Array.isArray(list) ? list.filter((item) => item && typeof item.url === "string") : [];
    } catch (e) {
      return [];
    }
  }

  function addRecent(url, prompt) {
    const list = loadRecent().filter((item) => item.url !== url);
    list.unshift({ url: url, prompt: prompt, created: Date.now() });
    storageSet(RECENT_STORAGE, JSON.stringify(list.slice(0, RECENT_MAX)));
    renderRecent();
  }

  function timeLeft(created) {
    const seconds = Math.floor((created + expirationSeconds * 1000 - Date.now()) / 1000);
    if (seconds <= 0) return "expired";
    if (seconds < 60) return "expires in under a minute";
    if (seconds < 3600) return "expires in " + Math.round(seconds / 60) + " min";
    const hours = Math.floor(seconds / 3600);
    return "expires in " + hours + " h " + Math.round((seconds % 3600) / 60) + " min";
  }

  function renderRecent() {
    const list = loadRecent();
    els.recent.replaceChildren();
    els.recentEmpty.hidden = list.length > 0;
    for (const item of list) {
      const url = safeImageUrl(item.url);
      if (!url) continue;
      const left = timeLeft(Number(item.created) || 0);
      const li = document.createElement("li");
      if (left === "expired") li.className = "expired";
      const link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      const prompt = String(item.prompt || "");
      if (left !== "expired") {
        // Expired images would just 404; skip the thumbnail for them.
        const thumb = document.createElement("img");
        thumb.src = url;
        thumb.alt = prompt;
        thumb.loading = "lazy";
        li.appendChild(thumb);
      }
      const meta = document.createElement("div");
      meta.className = "meta";
      link.textContent = prompt || "image";
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = left;
      meta.append(link, when);
      li.appendChild(meta);
      els.recent.appendChild(li);
    }
  }

  // ---- start ----------------------------------------------------------------------

  els.key.value = storageGet(KEY_STORAGE) || "";
  els.key.addEventListener("input", onKeyChanged);
  els.key.addEventListener("change", () => { clearTimeout(keyTimer); storageSet(KEY_STORAGE, apiKey()); loadModels(); });
  els.ratio.addEventListener("change", onRatioChanged);
  els.form.addEventListener("submit", generate);
  els.picture.addEventListener("change", () => readPicture(els.picture.files[0]));
  els.pictureClear.addEventListener("click", () => setPicture(null));
  // A picture pasted anywhere on the page becomes the picture to change.
  document.addEventListener("paste", (event) => {
    const items = (event.clipboardData && event.clipboardData.items) || [];
    for (const item of items) {
      if (item.kind === "file" && item.type.startsWith("image/")) {
        event.preventDefault();
        readPicture(item.getAsFile());
        return;
      }
    }
  });
  els.editResult.addEventListener("click", () => {
    const url = safeImageUrl(els.image.src);
    if (!url) return;
    setPicture(url); // our own link: the server reads it from its store
    els.prompt.value = "";
    els.prompt.placeholder = "Make it blue";
    els.prompt.focus();
  });
  // Ctrl/Cmd+Enter in the prompt generates, as in chat apps.
  els.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) els.form.requestSubmit();
  });
  onRatioChanged();
  loadModels();
  renderRecent();
  setInterval(renderRecent, RECENT_REFRESH_MS);
})();
