// A test call from the browser that speaks Twilio's Media Streams protocol, so the same engine serves it:
// the microphone goes out as 8 kHz mu-law 20 ms `media` frames; the agent's audio is played back with a
// small jitter buffer, `mark`s are echoed when their audio has played, and `clear` stops playback at once.
import { post } from "./api.js";
import { floatToMulaw, fromBase64, mulawToFloat, toBase64 } from "./mulaw.js";

const JITTER_S = 0.06;

export class BrowserCall {
  constructor(agentId, { onStatus = () => {}, onLevel = () => {} } = {}) {
    this.agentId = agentId;
    this.onStatus = onStatus;
    this.onLevel = onLevel;
    this.stats = { framesSent: 0, framesReceived: 0, marksEchoed: 0, clears: 0 };
    this.sources = new Set();
    this.pendingMarks = [];
    this.playhead = 0;
    this.sequence = 0;
    this.ended = false;
  }

  async start() {
    this.onStatus("connecting…");
    const info = await post(`/convai/agents/${encodeURIComponent(this.agentId)}/browser-call`, {});
    this.conversationId = info.conversation_id;
    this.callSid = info.call_sid;
    this.streamSid = "MZ" + crypto.randomUUID().replaceAll("-", "");
    this.ctx = new AudioContext();
    await this.ctx.audioWorklet.addModule("/console/mic-worklet.js");
    this.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const source = this.ctx.createMediaStreamSource(this.mic);
    this.capture = new AudioWorkletNode(this.ctx, "phone-line-capture");
    const mute = this.ctx.createGain();
    mute.gain.value = 0; // keeps the capture node pulled by the graph without playing the mic back
    source.connect(this.capture).connect(mute).connect(this.ctx.destination);

    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.ws = new WebSocket(`${scheme}://${location.host}${info.stream_url}`);
    this.ws.onopen = () => this.#sendStart(info.custom_parameters);
    this.ws.onmessage = (event) => this.#onMessage(event.data);
    this.ws.onclose = () => this.#finish("call ended");
    this.ws.onerror = () => this.onStatus("connection error");
    this.capture.port.onmessage = (event) => this.#sendFrame(event.data);
    this.timer = setInterval(() => this.#echoPlayedMarks(), 20);
    return info;
  }

  hangUp() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.#send({ event: "stop", streamSid: this.streamSid, stop: { callSid: this.callSid } });
      this.ws.close(1000, "caller hung up");
    }
    this.#finish("call ended");
  }

  #send(message) {
    message.sequenceNumber = String(++this.sequence);
    this.ws.send(JSON.stringify(message));
  }

  #sendStart(customParameters) {
    this.#send({ event: "connected", protocol: "Call", version: "1.0.0" });
    this.#send({
      event: "start",
      streamSid: this.streamSid,
      start: {
        streamSid: this.streamSid, accountSid: "ACbrowser", callSid: this.callSid, tracks: ["inbound"],
        customParameters, mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
      },
    });
    this.started = performance.now();
    this.onStatus("in call");
  }

  #sendFrame(samples) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.started === undefined) return;
    let energy = 0;
    for (const s of samples) energy += s * s;
    this.onLevel(Math.min(1, Math.sqrt(energy / samples.length) * 6), "caller");
    this.stats.framesSent++;
    this.#send({
      event: "media", streamSid: this.streamSid,
      media: { track: "inbound", chunk: String(this.stats.framesSent),
               timestamp: String(Math.round(performance.now() - this.started)),
               payload: toBase64(floatToMulaw(samples)) },
    });
  }

  #onMessage(raw) {
    let message;
    try { message = JSON.parse(raw); } catch { return; }
    if (message.event === "media") this.#play(fromBase64(message.media.payload));
    else if (message.event === "mark") this.pendingMarks.push({ name: message.mark.name, at: Math.max(this.playhead, this.ctx.currentTime) });
    else if (message.event === "clear") this.#clear();
  }

  #play(bytes) {
    this.stats.framesReceived++;
    const samples = mulawToFloat(bytes);
    const buffer = this.ctx.createBuffer(1, samples.length, 8000);
    buffer.copyToChannel(samples, 0);
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.playhead < now + 0.01) this.playhead = now + JITTER_S;
    node.start(this.playhead);
    this.playhead += buffer.duration;
    this.sources.add(node);
    node.onended = () => this.sources.delete(node);
    let energy = 0;
    for (const s of samples) energy += s * s;
    this.onLevel(Math.min(1, Math.sqrt(energy / samples.length) * 6), "agent");
  }

  #clear() {
    // Barge-in: drop everything queued and report its marks as done, as Twilio does.
    this.stats.clears++;
    for (const node of this.sources) { try { node.stop(); } catch { /* already stopped */ } }
    this.sources.clear();
    this.playhead = 0;
    for (const mark of this.pendingMarks.splice(0)) this.#echoMark(mark.name);
  }

  #echoPlayedMarks() {
    if (!this.ctx) return;
    while (this.pendingMarks.length && this.pendingMarks[0].at <= this.ctx.currentTime) {
      this.#echoMark(this.pendingMarks.shift().name);
    }
  }

  #echoMark(name) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.stats.marksEchoed++;
      this.#send({ event: "mark", streamSid: this.streamSid, mark: { name } });
    }
  }

  #finish(status) {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    this.mic?.getTracks().forEach((track) => track.stop());
    this.ctx?.close();
    this.onStatus(status);
  }
}
