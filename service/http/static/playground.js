// The playground at "/": an uploaded or recorded clip through POST resynthesize, then both clips
// played and drawn as spectrograms. Clips are decoded here and sent as 16-bit WAV, since what a
// browser records (WebM/Opus, Ogg) is often not readable by the server's libsndfile.
(function () {
  "use strict";
  const STORAGE = "vocos-api-key"; // shared with the key bar of the docs pages
  const RATE = 24000; // the vocoder's rate: sending at it spares the server a resampling
  const MODELS = ["mel", "encodec"]; // what resynthesize?model= accepts
  const BANDWIDTHS = [1.5, 3, 6, 12]; // kbps, EnCodec's
  const FFT_SIZE = 512;
  const RANGE_DB = 80;
  const IDLE = "Choose an audio file or record a clip.";
  const READY = "Ready: press Resynthesize.";
  const NOT_READY = "The server is not ready: ";
  const $ = (id) => document.getElementById(id);
  const objectUrls = {};
  let clip = null; // { body: Blob, samples: Float32Array | null, name }
  let recorder = null;

  // -- requests --------------------------------------------------------------------------------------

  const apiKey = () => sessionStorage.getItem(STORAGE) || "";

  function withKey(headers) {
    const all = Object.assign({}, headers);
    if (apiKey()) all.Authorization = "Bearer " + apiKey();
    return all;
  }

  // The service answers errors as {"error": {"type", "message", "request_id"}}.
  async function errorText(response) {
    try {
      const error = (await response.json()).error;
      if (error && error.message) {
        const id = error.request_id ? " (request id " + error.request_id + ")" : "";
        return response.status + " " + error.type + ": " + error.message + id + hint(response.status);
      }
    } catch (_) {
      // not JSON: a proxy's page, say
    }
    return "HTTP " + response.status + " " + response.statusText;
  }

  // The body the server counted is the WAV made here, not the file chosen: say so, and what helps.
  function hint(status) {
    if (status !== 413 || !clip || !clip.samples) return "";
    const size = clip.body.size < 1e6 ? Math.round(clip.body.size / 1e3) + " kB" : (clip.body.size / 1e6).toFixed(1) + " MB";
    return ". This page sends the clip as 16-bit WAV at 24 kHz (" + size + " here): try a shorter clip.";
  }

  function setStatus(text, kind) {
    $("status").textContent = text;
    $("status").dataset.kind = kind || "info";
    delete $("status").dataset.key;
  }

  // -- which models the server serves -----------------------------------------------------------------

  // GET models where the server has it; its shape is read leniently: a list of names or of objects
  // with a kind/name, or an object keyed by kind. /readyz lists {"models": {kind: source}}.
  function modelKinds(body) {
    const list = body && typeof body === "object" && !Array.isArray(body) && "models" in body ? body.models : body;
    let kinds = [];
    if (Array.isArray(list)) kinds = list.map((m) => (typeof m === "string" ? m : m && (m.kind || m.name)));
    else if (list && typeof list === "object") kinds = Object.keys(list);
    return MODELS.filter((kind) => kinds.includes(kind));
  }

  // The kinds, and whether GET models refused this tab's key (or its lack of one) with 401.
  async function fetchModels() {
    let refused = false;
    try {
      const response = await fetch("models", { headers: withKey({}) });
      refused = response.status === 401;
      if (response.ok) {
        const kinds = modelKinds(await response.json());
        if (kinds.length) return { kinds, refused };
      }
    } catch (_) {
      // a server without /models, or an unreadable answer: fall back to the readiness probe
    }
    const ready = await fetch("readyz");
    if (!ready.ok) throw new Error(await errorText(ready));
    return { kinds: modelKinds(await ready.json()), refused };
  }

  let loads = 0; // only the latest load applies: the key's change and its Enter both start one

  async function loadModels() {
    const load = ++loads;
    let kinds, refused;
    try {
      ({ kinds, refused } = await fetchModels());
      if (load !== loads) return;
    } catch (error) {
      if (load !== loads) return;
      setStatus(NOT_READY + error.message + ". Trying again in 3 s.", "error");
      setTimeout(loadModels, 3000);
      return;
    }
    const select = $("model");
    const previous = select.value;
    select.replaceChildren(...kinds.map((kind) => new Option(kind, kind)));
    if (kinds.includes(previous)) select.value = previous;
    select.disabled = !kinds.length;
    if (!kinds.length) setStatus("This server serves no model that can resynthesize audio.", "error");
    else if (refused) askForKey();
    else if ($("status").textContent.startsWith(NOT_READY) || $("status").dataset.key) setStatus(clip ? READY : IDLE, "info");
    $("api-key").setAttribute("aria-invalid", String(refused));
    syncControls();
  }

  // Asked when the page loads rather than after a refused upload; once given, the key stays in this
  // tab's sessionStorage, so the question does not come back on a reload.
  function askForKey() {
    if ($("status").dataset.kind === "busy") return; // a request under way answers for the key itself
    setStatus(apiKey()
      ? "The server refused this API key (401): check it in the API key field."
      : "This server needs an API key: enter it in the API key field.", "error");
    $("status").dataset.key = "asked";
    if (!apiKey()) $("api-key").focus();
  }

  function syncControls() {
    $("bandwidth-field").hidden = $("model").value !== "encodec";
    $("send").disabled = !clip || !$("model").value;
  }

  // -- audio in the browser ---------------------------------------------------------------------------

  // Decoded, mixed to mono and resampled to RATE by the browser's own decoders.
  async function decodeSamples(bytes) {
    const buffer = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(bytes);
    const mono = new Float32Array(buffer.length);
    for (let c = 0; c < buffer.numberOfChannels; c++) {
      const channel = buffer.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
    }
    return mono;
  }

  function wavBlob(samples, rate) {
    const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
    const ascii = (offset, text) => [...text].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
    ascii(0, "RIFF");
    view.setUint32(4, 36 + 2 * samples.length, true);
    ascii(8, "WAVEfmt ");
    view.setUint32(16, 16, true); // PCM header size
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, rate, true);
    view.setUint32(28, 2 * rate, true); // bytes per second
    view.setUint16(32, 2, true); // bytes per frame
    view.setUint16(34, 16, true); // bits per sample
    ascii(36, "data");
    view.setUint32(40, 2 * samples.length, true);
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    }
    return new Blob([view], { type: "audio/wav" });
  }

  async function useClip(blob, name) {
    if (!blob.size) {
      clip = null;
      show("input", null, null);
      show("result", null, null);
      $("input-info").textContent = "";
      setStatus(name + " is empty (0 bytes): choose an audio file (WAV, FLAC, MP3, Ogg) or record a clip.", "error");
      syncControls();
      return;
    }
    setStatus("Decoding " + name + "…", "busy");
    let samples = null;
    try {
      samples = await decodeSamples(await blob.arrayBuffer());
    } catch (_) {
      // this browser cannot decode it; the server may (it reads MP3 and Opus, among others)
    }
    if (samples && samples.length) {
      clip = { body: wavBlob(samples, RATE), samples, name };
      $("input-info").textContent = name + ": " + (samples.length / RATE).toFixed(2) + " s";
    } else {
      clip = { body: blob.slice(0, blob.size, "application/octet-stream"), samples: null, name };
      $("input-info").textContent = name + ": sent as is (this browser cannot decode it)";
    }
    show("input", clip.body, clip.samples);
    show("result", null, null);
    setStatus(READY, "info");
    syncControls();
  }

  async function toggleRecording() {
    if (recorder) {
      recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      setStatus("Recording needs a browser with MediaRecorder, and the page on https or localhost.", "error");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      setStatus("No microphone: " + error.message, "error");
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => event.data.size && chunks.push(event.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((track) => track.stop());
      const blob = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      recorder = null;
      $("record").textContent = "● Record";
      $("record").classList.remove("recording");
      useClip(blob, "recording");
    };
    recorder.start();
    $("record").textContent = "■ Stop";
    $("record").classList.add("recording");
    setStatus("Recording… press Stop when done.", "busy");
  }

  // -- the request ------------------------------------------------------------------------------------

  async function send() {
    const model = $("model").value;
    const query = new URLSearchParams({ model });
    if (model === "encodec") query.set("bandwidth", $("bandwidth").value);
    $("send").disabled = true;
    setStatus("Resynthesizing " + clip.name + " with the " + model + " model…", "busy");
    const started = performance.now();
    try {
      const response = await fetch("resynthesize?" + query, {
        method: "POST",
        body: clip.body,
        headers: withKey({ "Content-Type": clip.body.type }),
      });
      if (!response.ok) {
        setStatus(await errorText(response), "error");
        return;
      }
      const audio = await response.blob();
      const took = ((performance.now() - started) / 1000).toFixed(2);
      let samples = null;
      try {
        samples = await decodeSamples(await audio.arrayBuffer());
      } catch (_) {
        // played by the <audio> element all the same
      }
      show("result", audio, samples);
      offerDownload(audio, clip.name, model === "encodec" ? "encodec-" + $("bandwidth").value + "kbps" : model);
      const seconds = Number(response.headers.get("X-Audio-Duration")).toFixed(2);
      const label = model === "encodec" ? "encodec, " + $("bandwidth").value + " kbps" : model;
      $("result-info").textContent = label + ": " + seconds + " s";
      const id = response.headers.get("X-Request-Id");
      setStatus(response.status + " OK: " + seconds + " s of audio in " + took + " s (request id " + id + ").", "ok");
    } catch (error) {
      setStatus("The request failed: " + error.message, "error");
    } finally {
      syncControls();
    }
  }

  // "speech.mp3" resynthesized with mel -> "speech-vocos-mel.wav".
  function offerDownload(audio, name, how) {
    const stem = name.replace(/\.[^.]*$/, "") || "clip";
    const extension = audio.type.includes("flac") ? ".flac" : ".wav";
    const link = $("result-download");
    link.href = objectUrls.result;
    link.download = stem + "-vocos-" + how + extension;
    link.hidden = false;
  }

  // -- playing and drawing ----------------------------------------------------------------------------

  function show(which, blob, samples) {
    const audio = $(which + "-audio");
    if (objectUrls[which]) URL.revokeObjectURL(objectUrls[which]);
    objectUrls[which] = blob ? URL.createObjectURL(blob) : null;
    if (blob) audio.src = objectUrls[which];
    else audio.removeAttribute("src");
    if (which === "result" && !blob) {
      $("result-info").textContent = "";
      $("result-download").hidden = true;
      $("result-download").removeAttribute("href");
    }
    const empty = which === "input" ? "no clip yet" : "no result yet";
    drawSpectrogram($(which + "-spectrogram"), samples, blob ? "no spectrogram: not decodable here" : empty);
  }

  // In place, radix 2; re.length is a power of two.
  function fft(re, im) {
    const n = re.length;
    for (let i = 1, j = 0; i < n; i++) {
      let bit = n >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) {
        [re[i], re[j]] = [re[j], re[i]];
        [im[i], im[j]] = [im[j], im[i]];
      }
    }
    for (let size = 2; size <= n; size <<= 1) {
      const half = size >> 1;
      const step = (-2 * Math.PI) / size;
      for (let k = 0; k < half; k++) {
        const wr = Math.cos(step * k);
        const wi = Math.sin(step * k);
        for (let a = k; a < n; a += size) {
          const b = a + half;
          const tr = re[b] * wr - im[b] * wi;
          const ti = re[b] * wi + im[b] * wr;
          re[b] = re[a] - tr;
          im[b] = im[a] - ti;
          re[a] += tr;
          im[a] += ti;
        }
      }
    }
  }

  // Power in dB, frames x bins; a long clip gets a longer hop, so at most maxFrames frames.
  function stft(samples, maxFrames) {
    const bins = FFT_SIZE / 2;
    const hop = Math.max(FFT_SIZE / 4, Math.ceil(samples.length / maxFrames));
    const frames = Math.max(1, Math.floor((samples.length - FFT_SIZE) / hop) + 1);
    const hann = Float32Array.from({ length: FFT_SIZE }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / FFT_SIZE));
    const db = new Float32Array(frames * bins);
    const re = new Float32Array(FFT_SIZE);
    const im = new Float32Array(FFT_SIZE);
    for (let f = 0; f < frames; f++) {
      for (let i = 0; i < FFT_SIZE; i++) re[i] = (samples[f * hop + i] || 0) * hann[i];
      im.fill(0);
      fft(re, im);
      for (let k = 0; k < bins; k++) db[f * bins + k] = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-12);
    }
    return { db, frames, bins };
  }

  const COLORS = [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]]; // plasma

  function color(t) {
    const x = Math.max(0, Math.min(1, t)) * (COLORS.length - 1);
    const i = Math.min(COLORS.length - 2, Math.floor(x));
    return COLORS[i].map((c, j) => c + (COLORS[i + 1][j] - c) * (x - i));
  }

  const toMel = (hz) => 2595 * Math.log10(1 + hz / 700);
  const fromMel = (mel) => 700 * (Math.pow(10, mel / 2595) - 1);
  const NYQUIST = RATE / 2;
  const TICKS_HZ = [500, 1000, 2000, 4000, 8000];

  // Rows on a mel scale (row 0 at the top, NYQUIST), each interpolated between its two nearest bins.
  function spectrogramImage(db, frames, bins, rows) {
    const peak = db.reduce((a, b) => Math.max(a, b), -Infinity);
    const image = new ImageData(frames, rows);
    for (let row = 0; row < rows; row++) {
      const position = (fromMel(toMel(NYQUIST) * (1 - (row + 0.5) / rows)) / NYQUIST) * (bins - 1);
      const low = Math.floor(position);
      const high = Math.min(bins - 1, low + 1);
      const weight = position - low;
      for (let f = 0; f < frames; f++) {
        const value = db[f * bins + low] * (1 - weight) + db[f * bins + high] * weight;
        const [r, g, b] = color((value - peak + RANGE_DB) / RANGE_DB);
        image.data.set([r, g, b, 255], (row * frames + f) * 4);
      }
    }
    return image;
  }

  function drawAxes(context, width, height, seconds, scale) {
    context.fillStyle = "rgba(255, 255, 255, 0.85)";
    context.strokeStyle = "rgba(255, 255, 255, 0.35)";
    const labels = [[NYQUIST, 14 * scale], ...TICKS_HZ.map((hz) => [hz, height * (1 - toMel(hz) / toMel(NYQUIST))])];
    for (const [hz, y] of labels) {
      context.beginPath();
      context.moveTo(0, y);
      context.lineTo(4 * scale, y);
      context.stroke();
      context.fillText(hz >= 1000 ? hz / 1000 + " kHz" : hz + " Hz", 6 * scale, y + 4 * scale);
    }
    const duration = seconds.toFixed(2) + " s";
    context.fillText(duration, width - context.measureText(duration).width - 6 * scale, height - 6 * scale);
  }

  function drawSpectrogram(canvas, samples, emptyText) {
    const scale = window.devicePixelRatio || 1;
    canvas.width = Math.round((canvas.clientWidth || 520) * scale);
    canvas.height = Math.round((canvas.clientHeight || 240) * scale);
    const context = canvas.getContext("2d");
    context.fillStyle = "#0d0887";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.font = 11 * scale + "px system-ui, sans-serif";
    delete canvas.dataset.drawn;
    if (!samples || !samples.length) {
      context.fillStyle = "rgba(255, 255, 255, 0.85)";
      context.fillText(emptyText, 8 * scale, 20 * scale);
      return;
    }
    const { db, frames, bins } = stft(samples, canvas.width);
    const tile = document.createElement("canvas");
    tile.width = frames;
    tile.height = Math.min(canvas.height, 512);
    tile.getContext("2d").putImageData(spectrogramImage(db, frames, bins, tile.height), 0, 0);
    context.drawImage(tile, 0, 0, canvas.width, canvas.height);
    drawAxes(context, canvas.width, canvas.height, samples.length / RATE, scale);
    canvas.dataset.drawn = "true";
  }

  // -- start --------------------------------------------------------------------------------------------

  function start() {
    const key = $("api-key");
    key.value = apiKey();
    key.addEventListener("input", () => sessionStorage.setItem(STORAGE, key.value.trim()));
    key.addEventListener("change", loadModels); // a server's model list may need the key
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault(); // Enter in the key field: no reload, which would put the key in the URL
      loadModels();
    });
    $("bandwidth").replaceChildren(...BANDWIDTHS.map((kbps) => new Option(kbps + " kbps", String(kbps))));
    $("bandwidth").value = "6";
    $("file").addEventListener("change", () => $("file").files[0] && useClip($("file").files[0], $("file").files[0].name));
    $("record").addEventListener("click", toggleRecording);
    $("model").addEventListener("change", syncControls);
    $("send").addEventListener("click", send);
    show("input", null, null);
    show("result", null, null);
    loadModels();
  }

  start();
})();
