// The supervisor seat: the live calls of every instance (stage, caller sentiment), and one call opened to
// hear it (Web Audio), read its transcript as it happens, say, whisper, take it over with the microphone,
// release it, transfer it (warm or cold) and end it. Browsers cannot set headers on a WebSocket: the
// listen and take-over sockets open with a short-lived token from POST …/listen-token.
import { get, post } from "./api.js";
import { MULAW_TO_FLOAT, floatToMulaw, fromBase64, toBase64 } from "./mulaw.js";

const FRAME = 160; // 20 ms of 8 kHz mu-law
const FRAME_S = 0.02;
const JITTER_S = 0.08; // how far ahead of the audio clock the mix is scheduled (absorbs network jitter)
const MAX_QUEUED = 15; // frames a track may hold (300 ms); older ones are dropped so the delay stays small
const CATCH_UP_SLOTS = 25; // half a second of mixing: the window in which the queues must run low once
const SILENT = new Float32Array(FRAME);

const secs = (value) => (value == null ? "—" : `${Math.round(value)} s`);
const rms = (samples) => { let e = 0; for (const s of samples) e += s * s; return Math.sqrt(e / samples.length); };
const wsBase = () => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/convai/conversations`;

function mood(h, call) {
  if (!call.sentiment) return h("span", { class: "muted" }, "—");
  return h("span", { class: `pill mood-${call.sentiment}`, title: `score ${call.sentiment_score}` }, call.sentiment);
}

// ------------------------------------------------------------------ the live calls

export async function livePage(view, { h, fail, pill }) {
  const body = h("div", { id: "live" });
  const render = async () => {
    try {
      const data = await get("/convai/calls/live");
      const calls = data.calls ?? [];
      // Every instance's calls (the service may run as several instances behind a balancer).
      const instances = (data.instances ?? []).map((i) => `${i.instance_id}: ${i.count}`).join(" · ");
      body.replaceChildren(h("p", {}, h("strong", { id: "live-count" }, String(data.count ?? calls.length)), " calls in progress",
          instances ? h("span", { class: "muted", id: "live-instances" }, ` (per instance, max ${data.max_concurrent_calls} each: ${instances})`) : ""),
        calls.length ? h("table", { id: "live-calls" }, h("tr", {}, ["Conversation", "Stage", "Caller mood", "Duration", "Agent", "Instance"].map((t) => h("th", {}, t))),
          calls.map((call) => h("tr", { class: "clickable", dataset: { conversation: call.conversation_id || "" },
            onclick: () => { if (call.conversation_id) location.hash = `#/live/${call.conversation_id}`; } },
            h("td", {}, call.conversation_id || call.call_sid), h("td", {}, pill(call.state)), h("td", { class: "mood" }, mood(h, call)),
            h("td", {}, secs(call.duration_sec)), h("td", {}, call.agent_id || "—"), h("td", {}, call.instance_id || "—"))))
          : h("p", { class: "muted" }, "No calls right now."),
        calls.length ? h("p", { class: "muted small" }, "Open a call to hear it, read it as it happens, steer it or take it over.") : "");
    } catch (error) { fail(error); }
  };
  await render();
  const timer = setInterval(render, 1000);
  view.replaceChildren(h("h1", {}, "Live calls"), h("div", { class: "card" }, body));
  return () => clearInterval(timer);
}

// ------------------------------------------------------------------ the call's audio

// Both tracks of the listen socket, mixed and played: each track's frames wait in a small queue; as the
// audio clock advances (checked every 10 ms and on each frame) the mixer takes one frame of each (silence
// for a track with none), sums them, resamples 8 kHz to the AudioContext's rate (linear) and schedules the
// result JITTER_S ahead of the audio clock.
export class SeatAudio {
  constructor() {
    this.ctx = new AudioContext();
    this.rate = this.ctx.sampleRate;
    this.outLength = Math.round(this.rate * FRAME_S);
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 2048;
    this.volume = this.ctx.createGain();
    this.analyser.connect(this.volume).connect(this.ctx.destination);
    this.queues = { inbound: [], outbound: [] };
    this.muted = { inbound: false, outbound: false };
    this.previous = 0; // the last sample played: the resampler's join between frames
    this.playhead = 0;
    this.window = 0;
    this.probe = new Float32Array(this.analyser.fftSize);
    this.stats = { frames: { inbound: 0, outbound: 0 }, delayMs: { inbound: [], outbound: [] }, slots: 0, underruns: 0, dropped: 0, skipped: 0, audibleReads: 0, peakRms: 0 };
    this.levels = { inbound: 0, outbound: 0 };
    this.timer = setInterval(() => this.pump(), 10);
  }

  push(track, bytes) {
    const queue = this.queues[track];
    if (!queue) return;
    this.stats.frames[track]++;
    for (let at = 0; at + FRAME <= bytes.length; at += FRAME) {
      const samples = new Float32Array(FRAME);
      for (let i = 0; i < FRAME; i++) samples[i] = MULAW_TO_FLOAT[bytes[at + i]];
      this.levels[track] = rms(samples);
      queue.push(this.muted[track] ? SILENT : samples);
    }
    if (queue.length > MAX_QUEUED) { this.stats.dropped += queue.length - MAX_QUEUED; queue.splice(0, queue.length - MAX_QUEUED); }
    // The delay this page adds: until the frame just queued is heard (the schedule ahead, then the queue).
    const now = this.ctx.currentTime;
    const ahead = (this.playhead > now ? this.playhead - now : JITTER_S) * 1000;
    const delays = this.stats.delayMs[track];
    if (delays.length < 3000) delays.push(Math.round(ahead + (queue.length - 1) * FRAME_S * 1000));
    this.pump(); // on arrival too: a hidden tab's timers slow to once a second, its sockets do not
  }

  pump() {
    if (this.ctx.state === "closed") return;
    const now = this.ctx.currentTime;
    const waiting = () => this.queues.inbound.length || this.queues.outbound.length;
    if (this.playhead < now) {
      if (!waiting()) return this.measure();
      if (this.playhead) this.stats.underruns++;
      this.playhead = now + JITTER_S;
    }
    while (this.playhead < now + JITTER_S + FRAME_S && waiting()) this.schedule(this.mix());
    this.measure();
  }

  mix() {
    const { inbound, outbound } = this.queues;
    const a = inbound.shift() || SILENT, b = outbound.shift() || SILENT;
    // A burst leaves frames queued that steady arrivals never drain: what the queues kept all through the
    // last CATCH_UP_SLOTS (but one frame of margin) is skipped, so the delay comes back down.
    this.lowest = Math.min(this.lowest ?? Infinity, Math.max(inbound.length, outbound.length));
    if (++this.window >= CATCH_UP_SLOTS) {
      const extra = this.lowest - 1;
      if (extra > 0) { inbound.splice(0, extra); outbound.splice(0, extra); this.stats.skipped += extra; }
      this.window = 0; this.lowest = Infinity;
    }
    const mixed = new Float32Array(FRAME);
    for (let i = 0; i < FRAME; i++) mixed[i] = Math.max(-1, Math.min(1, a[i] + b[i]));
    return mixed;
  }

  schedule(samples) {
    const out = new Float32Array(this.outLength);
    const step = FRAME / this.outLength;
    for (let j = 0; j < out.length; j++) {
      const t = (j + 1) * step - 1; // the last output sample lands on the frame's last sample
      const i = Math.floor(t), frac = t - i;
      const left = i < 0 ? this.previous : samples[i];
      const right = samples[Math.min(FRAME - 1, i + 1)];
      out[j] = left + (right - left) * frac;
    }
    this.previous = samples[FRAME - 1];
    const buffer = this.ctx.createBuffer(1, out.length, this.rate);
    buffer.copyToChannel(out, 0);
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.analyser);
    node.start(this.playhead);
    this.playhead += buffer.duration;
    this.stats.slots++;
  }

  measure() {
    // What the audio graph actually renders (before the volume): shown as a meter, read by the browser test.
    this.analyser.getFloatTimeDomainData(this.probe);
    const level = rms(this.probe);
    if (level > 0.01) this.stats.audibleReads++;
    this.stats.peakRms = Math.max(this.stats.peakRms, level);
  }

  setVolume(on) { this.volume.gain.value = on ? 1 : 0; }

  close() { clearInterval(this.timer); this.ctx.close(); }
}

// ------------------------------------------------------------------ one call

export async function seatPage(view, { h, toast, fail, pill }, conversationId) {
  const id = encodeURIComponent(conversationId);
  const conversation = await get(`/convai/conversations/${id}`);
  const control = (body) => post(`/convai/conversations/${id}/control`, body);
  const token = async () => (await post(`/convai/conversations/${id}/listen-token`)).token;

  const status = h("span", { class: "call-status", id: "seat-status" }, "connecting…");
  const stage = h("span", { id: "seat-stage" }, pill(conversation.call_state || ""));
  const transcript = h("div", { class: "transcript seat-transcript", id: "seat-transcript" });
  const events = h("ul", { class: "seat-events", id: "seat-events" });
  const meters = { inbound: h("div"), outbound: h("div") };
  const sound = h("button", { class: "secondary", id: "seat-sound" }, "Mute");
  const text = (name, placeholder) => h("input", { id: `seat-${name}-text`, placeholder, autocomplete: "off" });
  const sayText = text("say", "Words the agent says next");
  const whisperText = text("whisper", "Guidance the agent follows, never spoken");
  const transferTo = h("input", { id: "seat-transfer-to", type: "tel", placeholder: "+14155550123", autocomplete: "off" });
  const transferMode = h("select", { id: "seat-transfer-mode" }, h("option", { value: "warm" }, "warm"), h("option", { value: "cold" }, "cold"));
  const buttons = {
    say: h("button", { id: "seat-say" }, "Say"),
    whisper: h("button", { id: "seat-whisper", class: "secondary" }, "Whisper"),
    takeover: h("button", { id: "seat-takeover" }, "Take over"),
    release: h("button", { id: "seat-release", class: "secondary", hidden: true }, "Release"),
    transfer: h("button", { id: "seat-transfer", class: "secondary" }, "Transfer"),
    end: h("button", { id: "seat-end", class: "danger" }, "End call"),
  };

  const seat = { conversationId, stats: null, ended: false, takenOver: false, micFramesSent: 0, micLevel: 0, reconnects: 0 };
  window.__seat = seat; // the browser test reads the seat's counters here
  const audio = new SeatAudio();
  seat.stats = audio.stats;
  seat.audio = audio;

  // ---- transcript: the turns so far, then the socket's words (interim replaced by the final)
  const interim = {};
  const turnEl = (role, words, final) => h("div", { class: `turn ${role === "user" ? "user" : "agent"}${role === "supervisor" ? " supervisor" : ""}${final ? "" : " interim"}`, dataset: { role } },
    h("div", { class: "meta" }, role === "user" ? "caller" : role), h("div", { class: "text" }, words));
  const scrolled = () => { transcript.scrollTop = transcript.scrollHeight; };
  window.addEventListener("resize", scrolled);
  for (const turn of conversation.transcript || []) {
    if (turn.text) transcript.append(turnEl(turn.source === "supervisor" && turn.kind === "supervisor" ? "supervisor" : turn.role, turn.text, true));
  }
  const heard = (role, words, final) => {
    const el = turnEl(role, words, final);
    if (interim[role]) interim[role].replaceWith(el); else transcript.append(el);
    interim[role] = final ? null : el;
    scrolled();
  };
  const note = (words) => { events.prepend(h("li", {}, `${new Date().toLocaleTimeString()} · ${words}`)); };

  // ---- take-over: the microphone becomes the agent's voice
  let mic = null, capture = null, takeoverSocket = null;
  const stopMic = () => {
    capture?.disconnect(); capture = null;
    mic?.getTracks().forEach((track) => track.stop()); mic = null;
    if (takeoverSocket && takeoverSocket.readyState <= WebSocket.OPEN) takeoverSocket.close(1000, "released");
    takeoverSocket = null;
    audio.muted.outbound = false;
  };
  const showTakenOver = (on) => {
    seat.takenOver = on;
    buttons.takeover.hidden = on; buttons.release.hidden = !on;
    buttons.say.disabled = on;
    if (!seat.ended) status.textContent = on ? "you are on the call" : "listening";
  };
  // A control action reaching the call (its ``control`` event on the listen socket), or false after a while.
  const waiters = [];
  const reached = (type, ms) => new Promise((resolve) => {
    const waiter = { type, resolve };
    waiters.push(waiter);
    setTimeout(() => { const i = waiters.indexOf(waiter); if (i >= 0) waiters.splice(i, 1); resolve(false); }, ms);
  });
  const takeOver = async () => {
    status.textContent = "taking over…";
    await audio.ctx.resume();
    if (!seat.workletLoaded) { await audio.ctx.audioWorklet.addModule("/console/mic-worklet.js"); seat.workletLoaded = true; }
    const socket = takeoverSocket = new WebSocket(`${wsBase()}/${id}/takeover?token=${await token()}`);
    await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = () => reject(new Error("the take-over socket did not open")); });
    // The agent stops first; the microphone opens once it has (what is sent before that is not heard).
    const stopped = reached("takeover", 5000);
    await control({ type: "takeover" });
    seat.holding = true; // asked for: given back if the microphone cannot be had
    await stopped;
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const source = audio.ctx.createMediaStreamSource(mic);
    capture = new AudioWorkletNode(audio.ctx, "phone-line-capture");
    const silent = audio.ctx.createGain();
    silent.gain.value = 0; // pulls the capture node through the graph without playing the microphone back
    source.connect(capture).connect(silent).connect(audio.ctx.destination);
    capture.port.onmessage = (event) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      seat.micLevel = audio.levels.outbound = rms(event.data); // the agent's meter shows your voice
      seat.micFramesSent++;
      socket.send(JSON.stringify({ event: "media", track: "outbound", payload: toBase64(floatToMulaw(event.data)) }));
    };
    audio.muted.outbound = true; // the caller hears you: your own voice is not played back to you
    showTakenOver(true);
    note("you took the call over: the caller hears your microphone");
  };
  const giveBack = () => {
    stopMic();
    if (seat.holding && !seat.ended) control({ type: "release" }).catch(() => {});
    seat.holding = false;
  };

  // ---- buttons
  const act = (button, run) => {
    button.onclick = async () => {
      button.disabled = true;
      try { await run(); } catch (error) { if (button === buttons.takeover) { giveBack(); showTakenOver(false); } fail(error); }
      finally { button.disabled = seat.ended || (button === buttons.say && seat.takenOver); }
    };
  };
  const sendText = (type, input) => async () => {
    const words = input.value.trim();
    if (!words) { toast(`Type what to ${type} first.`, true); return; }
    await control({ type, text: words });
    input.value = "";
    toast(type === "say" ? "The agent says it next." : "Whispered to the agent.");
  };
  act(buttons.say, sendText("say", sayText));
  act(buttons.whisper, sendText("whisper", whisperText));
  act(buttons.takeover, takeOver);
  act(buttons.release, async () => {
    await control({ type: "release" });
    seat.holding = false;
    stopMic();
    showTakenOver(false);
    note("you released the call to the agent");
  });
  act(buttons.transfer, async () => {
    const to = transferTo.value.trim();
    if (!to) { toast("Type the number to transfer to.", true); return; }
    if (!confirm(`Transfer this call to ${to} (${transferMode.value})?`)) return;
    await control({ type: "transfer", to, mode: transferMode.value });
    toast("Transferring.");
  });
  act(buttons.end, async () => { if (confirm("End this call now?")) await control({ type: "end_call" }); });
  sayText.onkeydown = (event) => { if (event.key === "Enter") buttons.say.click(); };
  whisperText.onkeydown = (event) => { if (event.key === "Enter") buttons.whisper.click(); };
  sound.onclick = async () => {
    const on = sound.textContent !== "Mute";
    await audio.ctx.resume();
    audio.setVolume(on);
    sound.textContent = on ? "Mute" : "Unmute";
  };

  // ---- the listen socket
  let listenSocket = null;
  const ended = (reason) => {
    if (seat.ended) return;
    seat.ended = true;
    stopMic();
    status.textContent = `ended (${reason})`;
    Object.values(buttons).forEach((b) => { b.disabled = true; });
    note(`the call ended: ${reason}`);
  };
  const onMessage = (raw) => {
    let m;
    try { m = JSON.parse(raw); } catch { return; }
    if (m.event === "media") audio.push(m.track, fromBase64(m.payload));
    else if (m.event === "transcript") heard(m.role, m.text, m.final);
    else if (m.event === "stage") { stage.replaceChildren(pill(m.stage)); note(`stage: ${m.stage}`); }
    else if (m.event === "tool") note(`tool ${m.name}: ${m.success ? "ok" : "failed"}`);
    else if (m.event === "control") {
      note(`${m.type}${m.text ? `: “${m.text}”` : ""}${m.to ? ` → ${m.to} (${m.mode || "cold"})` : ""} reached the call`);
      for (const waiter of waiters.filter((w) => w.type === m.type)) { waiters.splice(waiters.indexOf(waiter), 1); waiter.resolve(true); }
    } else if (m.event === "end") ended(m.reason);
  };
  const listen = async () => {
    const socket = listenSocket = new WebSocket(`${wsBase()}/${id}/listen?token=${await token()}`);
    socket.onopen = () => { status.textContent = audio.ctx.state === "running" ? "listening" : "listening (press Unmute to hear)"; };
    socket.onmessage = (event) => onMessage(event.data);
    socket.onclose = (event) => {
      if (seat.ended || socket !== listenSocket) return;
      if (event.code === 1000) { ended("call ended"); return; }
      // Dropped for falling behind (4001) or cut: a new token and socket, a few times.
      if (seat.reconnects++ < 3) { status.textContent = "reconnecting…"; listen().catch((error) => ended(error.status === 409 ? "over" : "unreachable")); }
      else status.textContent = "disconnected";
    };
  };
  if (conversation.ended_at || conversation.call_state === "ENDED") ended(conversation.end_reason || "over");
  else {
    try { await listen(); } catch (error) { ended(error.status === 409 ? "over" : "unreachable"); fail(error); }
  }
  if (audio.ctx.state !== "running") sound.textContent = "Unmute"; // no click on the page yet: the browser waits for one
  const meterTimer = setInterval(() => {
    for (const track of ["inbound", "outbound"]) meters[track].style.width = `${Math.min(100, Math.round(audio.levels[track] * 600))}%`;
    audio.levels.inbound *= 0.6; audio.levels.outbound *= 0.6;
  }, 100);

  const field = (label, ...children) => h("div", { class: "seat-line" }, h("label", {}, label), h("div", { class: "seat-inputs" }, ...children));
  view.replaceChildren(
    h("div", { class: "actions wrap seat-head" }, h("h1", {}, "Live call"), stage, status, sound),
    h("p", { class: "muted small seat-who" }, `${conversation.agent_name || conversation.agent_id || "agent"} · ${conversation.from_number || "—"} → ${conversation.to_number || "—"} · `,
      h("a", { href: `#/conversations/${id}` }, conversationId)),
    h("div", { class: "seat-grid" },
      h("div", { class: "card" },
        h("div", { class: "seat-meters" }, h("label", {}, "Caller"), h("div", { class: "meter" }, meters.inbound),
          h("label", {}, "Agent (or you)"), h("div", { class: "meter" }, meters.outbound)),
        h("label", {}, "Live transcript"), transcript),
      h("div", { class: "card seat-controls", id: "seat-controls" },
        field("Say (the agent speaks it next)", sayText, buttons.say),
        field("Whisper (the agent's LLM sees it, the caller does not)", whisperText, buttons.whisper),
        field("Take over (your microphone becomes the agent's voice)", buttons.takeover, buttons.release),
        field("Transfer (warm: the rep hears a summary first)", transferTo, transferMode, buttons.transfer),
        field("End", buttons.end),
        h("label", {}, "What happened"), events)));

  return () => {
    clearInterval(meterTimer);
    window.removeEventListener("resize", scrolled);
    giveBack(); // never leave a call mute
    seat.ended = true;
    listenSocket?.close(1000, "left the page");
    audio.close();
  };
}
