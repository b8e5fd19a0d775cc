// The live transcription page: microphone -> AudioWorklet (16 kHz PCM16) -> /v1/stream,
// with partials, finals, a level meter, copy and download. No build step, no CDN.
const $ = (id) => document.getElementById(id);
const toggle = $("toggle"), statusEl = $("status"), finalsEl = $("finals"), partialEl = $("partial");
const meter = $("meter").firstElementChild;
const FRAME_MS = 40;

let ws = null, audio = null, stream = null, node = null, running = false;
const lines = [];

function streamUrl() {
  const url = new URL("v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function clock(seconds) {
  const m = Math.floor(seconds / 60), s = (seconds - 60 * m).toFixed(1).padStart(4, "0");
  return `${String(m).padStart(2, "0")}:${s}`;
}

function setStatus(text, isError = false) {
  statusEl.textContent = text;
  statusEl.className = isError ? "error" : "";
}

function onMessage(event) {
  const m = JSON.parse(event.data);
  if (m.type === "level") {
    meter.style.width = `${Math.round(m.value * 100)}%`;
  } else if (m.type === "partial") {
    partialEl.textContent = m.text;
  } else if (m.type === "final") {
    partialEl.textContent = "";
    if (!m.text) return;
    lines.push(`[${clock(m.start)} → ${clock(m.end)}] ${m.text}`);
    const p = document.createElement("p");
    p.className = "final";
    const t = document.createElement("time");
    t.textContent = `${clock(m.start)} → ${clock(m.end)}`;
    p.append(t, document.createTextNode(m.text));
    finalsEl.append(p);
    $("copy").disabled = $("download").disabled = false;
  } else if (m.type === "error") {
    setStatus(`${m.code}: ${m.message}`, true);
  } else if (m.type === "status" && m.message === "stopped") {
    ws.close(1000);
  }
}

async function start() {
  toggle.disabled = true;
  setStatus("asking for the microphone…");
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    audio = new AudioContext();
    await audio.audioWorklet.addModule(new URL("worklet.js", import.meta.url));
    ws = new WebSocket(streamUrl());
    ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("cannot connect to the server"));
    });
    ws.onmessage = onMessage;
    ws.onclose = (e) => {
      if (running) setStatus(`connection closed (${e.code}${e.reason ? ": " + e.reason : ""})`, true);
      cleanup();
    };
    ws.send(JSON.stringify({ action: "start", sample_rate: 16000, format: "pcm_s16le" }));
    const source = audio.createMediaStreamSource(stream);
    node = new AudioWorkletNode(audio, "pcm-capture", {
      processorOptions: { targetRate: 16000, frameMs: FRAME_MS },
    });
    node.port.onmessage = (e) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(e.data); };
    source.connect(node);
    running = true;
    toggle.textContent = "Stop";
    toggle.classList.add("live");
    setStatus("listening");
  } catch (err) {
    setStatus(err.message || String(err), true);
    cleanup();
  } finally {
    toggle.disabled = false;
  }
}

function stop() {
  running = false;
  toggle.disabled = true;
  setStatus("finishing…");
  if (node) node.port.onmessage = null;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ action: "stop" }));  // the server sends the last finals, then "stopped"
  } else {
    cleanup();
  }
}

function cleanup() {
  running = false;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (audio) audio.close();
  stream = audio = node = null;
  toggle.textContent = "Start";
  toggle.classList.remove("live");
  toggle.disabled = false;
  meter.style.width = "0";
  if (!statusEl.classList.contains("error")) setStatus("idle");
}

toggle.addEventListener("click", () => (running ? stop() : start()));
$("copy").addEventListener("click", async () => {
  await navigator.clipboard.writeText(lines.join("\n") + "\n");
  setStatus("copied");
});
$("download").addEventListener("click", () => {
  const blob = new Blob([lines.join("\n") + "\n"], { type: "text/plain" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `transcript-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.txt`;
  a.click();
  URL.revokeObjectURL(a.href);
});
