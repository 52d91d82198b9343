// Live page: a face speaks what the microphone hears, or an audio file, through /v1/live.
// Plain browser JavaScript, no build step, no third-party code, no other origin.
//
// The voice is captured at 16 kHz (an AudioContext at the model's rate), cut into 80-ms
// chunks of float32 PCM and sent as binary WebSocket messages. Frames come back as JPEG
// (a 16-byte header each: frame index, time in ms, audio samples received, width, height)
// drawn on a canvas, or as fragmented MP4 played through Media Source Extensions.
//
// For tests and the curious, #live-stats carries the session's numbers as data-*
// attributes: state, frames, latency percentiles, and how much the mouth region of the
// frames drawn varies (data-mouth-spread: standard deviation of its mean brightness).
"use strict";

(function () {
  const RATE = 16000;                 // what ATVGnet takes; the AudioContext resamples to it
  const CHUNK_SAMPLES = 1280;         // 80 ms a message
  const HEADER_BYTES = 16;
  const SYNC_DELAY_S = 0.6;           // a file's voice is played this late, the frames drawn on its clock
  const MOUTH_HISTORY = 100;          // frames whose mouth region the stats remember
  const MP4_TYPE = 'video/mp4; codecs="avc1.640028, mp4a.40.2"';

  const apiRoot = window.location.pathname.replace(/live\/?$/, "");
  const apiKey = new URLSearchParams(window.location.search).get("key");
  const $ = (id) => document.getElementById(id);

  let session = null;                 // the running session, or null
  const streamOptions = {};           // model id -> the options it streams with (DAVS: no fine-tuning)

  // ---------------------------------------------------------------- helpers

  function showError(text) {
    const banner = $("error-banner");
    banner.textContent = text;
    banner.hidden = !text;
  }

  function setStatus(text) {
    $("live-status").textContent = text;
  }

  function setStat(name, value, shown) {
    $("live-stats").setAttribute("data-" + name, String(value));
    const cell = $("stat-" + name.replace("latency-", ""));
    if (cell) cell.textContent = shown === undefined ? String(value) : shown;
  }

  function percentile(values, q) {
    if (!values.length) return NaN;
    const sorted = values.slice().sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  async function errorText(response) {
    let text = "HTTP " + response.status;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) text += " " + body.error.message;
    } catch (ignored) {
      // not JSON: the status is all there is
    }
    if (response.status === 401) text += " (open the page as live?key=<API key>)";
    return text;
  }

  // The face's file id: the one typed in, or the chosen photo uploaded now.
  async function faceId() {
    const typed = $("face-id").value.trim();
    if (typed) return typed;
    const file = $("face-file").files[0];
    if (!file) throw new Error("pick a face: upload a photo or give a file id");
    setStatus("Uploading the photo…");
    const form = new FormData();
    form.append("file", file);
    const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
    const response = await fetch(apiRoot + "v1/files", { method: "POST", body: form, headers: headers });
    if (!response.ok) throw new Error(await errorText(response));
    const id = (await response.json()).id;
    $("face-id").value = id;
    return id;
  }

  // The models that stream, from GET /v1/models: those that do as they are, and those that do with
  // their stream_options (sent with the session's start message).
  async function listModels() {
    const headers = apiKey ? { Authorization: "Bearer " + apiKey } : {};
    const response = await fetch(apiRoot + "v1/models", { headers: headers });
    if (!response.ok) return;         // the default model still works; the start says what is wrong
    const select = $("model");
    for (const model of (await response.json()).data) {
      if (model.task !== "talking-face" || !(model.stream || model.stream_options)) continue;
      streamOptions[model.id] = model.stream ? {} : model.stream_options;
      const option = document.createElement("option");
      option.value = model.id;
      const needs = Object.entries(streamOptions[model.id]).map(([k, v]) => k + "=" + v).join(", ");
      option.textContent = model.id + (needs ? " (" + needs + ")" : "");
      select.appendChild(option);
    }
  }

  function socketUrl() {
    const url = new URL(apiRoot + "v1/live", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (apiKey) url.searchParams.set("key", apiKey);
    return url.href;
  }

  // ---------------------------------------------------------------- a session

  class Session {
    constructor(source, output, model) {
      this.source = source;           // "mic" or a File
      this.output = output;           // "jpeg" or "fmp4"
      this.model = model;             // a model id, or "" for the server's default
      this.pending = [];              // captured Float32Arrays not yet sent
      this.pendingLength = 0;
      this.sent = [];                 // [samples sent in all, performance.now()] per message
      this.samplesSent = 0;
      this.latencies = [];
      this.frames = 0;
      this.firstFrameAt = 0;
      this.queue = [];                // JPEG frames waiting for their time: {due, bitmap}
      this.mouth = [];
      this.ended = false;
    }

    async start(fileId) {
      this.context = new AudioContext({ sampleRate: RATE });
      await this.context.audioWorklet.addModule("static/live-worklet.js");
      this.capture = new AudioWorkletNode(this.context, "pcm-capture");
      this.capture.port.onmessage = (event) => this.captured(event.data);
      // A node nobody listens to is not run: a silent path to the speakers keeps it going.
      const silent = this.context.createGain();
      silent.gain.value = 0;
      this.capture.connect(silent).connect(this.context.destination);
      if (this.source === "mic") {
        this.media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
      } else {
        this.voice = await this.context.decodeAudioData(await this.source.arrayBuffer());
      }
      if (this.output === "fmp4") this.openVideo();
      await this.connect(fileId);
    }

    connect(fileId) {
      return new Promise((resolve, reject) => {
        const socket = new WebSocket(socketUrl());
        socket.binaryType = "arraybuffer";
        this.socket = socket;
        const start = { file_id: fileId, output: this.output, format: "f32le", sample_rate: RATE };
        if (this.model) Object.assign(start, { model: this.model }, streamOptions[this.model] || {});
        socket.onopen = () => socket.send(JSON.stringify(start));
        socket.onmessage = (event) => {
          if (typeof event.data === "string") {
            const message = JSON.parse(event.data);
            if (message.type === "ready") {
              this.ready = message;
              $("lookahead").textContent = "0.175";
              this.play();
              resolve();
            } else if (message.type === "error") {
              showError(message.error.message);
            } else if (message.type === "end") {
              setStatus("Ended: " + message.frames + " frames.");
            }
          } else if (this.output === "fmp4") {
            this.appendVideo(event.data);
          } else {
            this.frame(event.data);
          }
        };
        socket.onclose = (event) => {
          this.closed = true;
          if (event.code !== 1000 && event.reason) showError(event.reason + " (" + event.code + ")");
          else if (event.code !== 1000) showError("the session closed (" + event.code + ")");
          this.stopAudio();
          setStat("state", event.code === 1000 ? "ended" : "error");
          if (session === this) finish();
          reject(new Error(event.reason || "the session closed"));
        };
      });
    }

    // The voice starts: the microphone's at once, a file's on the audio clock (and heard later).
    play() {
      setStat("state", "streaming");
      setStatus(this.source === "mic" ? "Listening…" : "Playing the file…");
      if (this.media) {
        this.input = this.context.createMediaStreamSource(this.media);
        this.input.connect(this.capture);
      } else {
        this.input = this.context.createBufferSource();
        this.input.buffer = this.voice;
        this.input.connect(this.capture);
        if (this.output === "jpeg") {
          const delay = this.context.createDelay(2);
          delay.delayTime.value = SYNC_DELAY_S;
          this.input.connect(delay).connect(this.context.destination);
        }
        this.input.onended = () => this.end();
        this.clockStart = this.context.currentTime + SYNC_DELAY_S;
        this.input.start();
        this.timer = setInterval(() => this.drawDue(), 10);
      }
    }

    captured(samples) {
      if (this.ended || !this.ready) return;
      this.pending.push(samples);
      this.pendingLength += samples.length;
      if (this.pendingLength >= CHUNK_SAMPLES) this.flush();
    }

    flush() {
      if (!this.pendingLength || this.socket.readyState !== WebSocket.OPEN) return;
      const chunk = new Float32Array(this.pendingLength);
      let offset = 0;
      for (const piece of this.pending) {
        chunk.set(piece, offset);
        offset += piece.length;
      }
      this.pending = [];
      this.pendingLength = 0;
      this.socket.send(chunk.buffer);
      this.samplesSent += chunk.length;
      this.sent.push([this.samplesSent, performance.now()]);
    }

    // The voice is over (the file ended, or Stop): the server sends the last frames and closes.
    end() {
      if (this.ended) return;
      this.flush();
      this.ended = true;
      this.stopAudio();
      if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ end: true }));
      setStatus("Finishing…");
    }

    stopAudio() {
      if (this.input && this.input.stop && !this.stopped) {
        this.stopped = true;
        try { this.input.stop(); } catch (ignored) { /* not started */ }
      }
      if (this.media) this.media.getTracks().forEach((track) => track.stop());
    }

    // One JPEG frame: its latency from the header, then drawn now (microphone) or on time (file).
    frame(buffer) {
      const view = new DataView(buffer);
      const index = view.getUint32(0);
      const ms = view.getUint32(4);
      const samples = view.getUint32(8);
      const now = performance.now();
      while (this.sent.length > 1 && this.sent[0][0] < samples) this.sent.shift();
      if (this.sent.length && this.sent[0][0] === samples) this.latencies.push((now - this.sent[0][1]) / 1000);
      if (!this.firstFrameAt) this.firstFrameAt = now;
      this.frames += 1;
      const blob = new Blob([new Uint8Array(buffer, HEADER_BYTES)], { type: "image/jpeg" });
      createImageBitmap(blob).then((bitmap) => {
        if (this.source === "mic") this.draw(bitmap);
        else this.queue.push({ due: this.clockStart + ms / 1000, bitmap: bitmap, index: index });
      });
      this.showStats();
    }

    drawDue() {
      const now = this.context.currentTime;
      while (this.queue.length && this.queue[0].due <= now) this.draw(this.queue.shift().bitmap);
      if (this.closed && !this.queue.length) clearInterval(this.timer);
    }

    draw(bitmap) {
      const canvas = $("face-canvas");
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(bitmap, 0, 0);
      bitmap.close();
      // The mouth region of an aligned face: the lower middle of the frame.
      const x = Math.round(canvas.width * 0.3), y = Math.round(canvas.height * 0.68);
      const w = Math.round(canvas.width * 0.4), h = Math.round(canvas.height * 0.27);
      const pixels = context.getImageData(x, y, w, h).data;
      let sum = 0;
      for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
      this.mouth.push(sum / (pixels.length / 4) / 3);
      if (this.mouth.length > MOUTH_HISTORY) this.mouth.shift();
      const mean = this.mouth.reduce((a, b) => a + b, 0) / this.mouth.length;
      const spread = Math.sqrt(this.mouth.reduce((a, b) => a + (b - mean) * (b - mean), 0) / this.mouth.length);
      setStat("mouth-spread", spread.toFixed(3));
      setStat("mouth-distinct", new Set(this.mouth.map((v) => v.toFixed(2))).size);
    }

    showStats() {
      setStat("frames", this.frames);
      const p50 = percentile(this.latencies, 0.5), p99 = percentile(this.latencies, 0.99);
      if (Number.isFinite(p50)) {
        setStat("latency-p50", p50.toFixed(3), Math.round(p50 * 1000) + " ms");
        setStat("latency-p99", p99.toFixed(3), Math.round(p99 * 1000) + " ms");
      }
      const seconds = (performance.now() - this.firstFrameAt) / 1000;
      if (seconds > 1) $("stat-fps").textContent = (this.frames / seconds).toFixed(1) + " /s";
    }

    // ---- fragmented MP4 through Media Source Extensions; the video carries the voice
    openVideo() {
      const video = $("face-video");
      $("face-canvas").hidden = true;
      video.hidden = false;
      video.muted = this.source === "mic";     // never play the microphone back
      this.buffers = [];
      this.mediaSource = new MediaSource();
      video.src = URL.createObjectURL(this.mediaSource);
      this.mediaSource.addEventListener("sourceopen", () => {
        this.sourceBuffer = this.mediaSource.addSourceBuffer(MP4_TYPE);
        this.sourceBuffer.mode = "segments";
        this.sourceBuffer.addEventListener("updateend", () => this.appendVideo());
        this.appendVideo();
      });
    }

    appendVideo(data) {
      if (data) this.buffers.push(data);
      const buffer = this.sourceBuffer;
      if (!buffer || buffer.updating || !this.buffers.length) return;
      buffer.appendBuffer(this.buffers.shift());
      const video = $("face-video");
      if (video.paused && buffer.buffered.length) video.play().catch(() => {});
      // Live: stay near the newest frames rather than drift behind.
      if (this.source === "mic" && buffer.buffered.length) {
        const end = buffer.buffered.end(buffer.buffered.length - 1);
        if (end - video.currentTime > 1.0) video.currentTime = end - 0.3;
      }
    }
  }

  // ---------------------------------------------------------------- the page

  function chosenOutput() {
    const checked = document.querySelector('input[name="output"]:checked');
    return checked ? checked.value : "jpeg";
  }

  function finish() {
    session = null;
    $("start-mic").disabled = false;
    $("start-file").disabled = false;
    $("stop").disabled = true;
  }

  async function begin(source) {
    if (session) return;
    showError("");
    $("start-mic").disabled = true;
    $("start-file").disabled = true;
    $("stop").disabled = false;
    setStat("state", "connecting");
    // A new session's numbers start from nothing, not from the last session's.
    setStat("frames", 0);
    for (const name of ["latency-p50", "latency-p99", "fps"]) setStat(name, "", "–");
    try {
      const id = await faceId();
      setStatus("Connecting…");
      session = new Session(source, chosenOutput(), $("model").value);
      window.liveSession = session;
      await session.start(id);
    } catch (error) {
      showError(String(error.message || error));
      setStat("state", "error");
      if (session) session.stopAudio();
      finish();
    }
  }

  $("start-mic").addEventListener("click", () => begin("mic"));
  $("start-file").addEventListener("click", () => {
    const file = $("audio-file").files[0];
    if (!file) showError("choose an audio file first");
    else begin(file);
  });
  $("stop").addEventListener("click", () => session && session.end());
  $("sync-delay").textContent = String(SYNC_DELAY_S);
  if (apiKey) $("jobs-link").href = "dashboard?key=" + encodeURIComponent(apiKey);
  listModels().catch(() => {});
})();
