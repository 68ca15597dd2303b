// G.711 mu-law <-> linear PCM, with lookup tables (the same codec Twilio uses on the phone line).
const BIAS = 0x84, CLIP = 32635;

export const MULAW_TO_FLOAT = new Float32Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  let t = ((u & 0x0f) << 3) + BIAS;
  t <<= (u & 0x70) >> 4;
  MULAW_TO_FLOAT[i] = ((u & 0x80) ? (BIAS - t) : (t - BIAS)) / 32768;
}

export function encodeSample(pcm16) {
  const sign = pcm16 < 0 ? 0x80 : 0;
  let x = Math.min(Math.abs(pcm16), CLIP) + BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (x & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (x >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

export function floatToMulaw(samples) {
  const out = new Uint8Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = encodeSample(Math.round(s * 32767));
  }
  return out;
}

export function mulawToFloat(bytes) {
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = MULAW_TO_FLOAT[bytes[i]];
  return out;
}

export function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

export function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
