// Runs on the audio thread: low-passes and decimates the microphone to 8 kHz, posts 20 ms frames (160 samples).
class PhoneLineCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 8000;
    this.position = 0;        // fractional read position into the input, in input samples
    this.acc = 0; this.count = 0;
    this.frame = new Float32Array(160);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    // Box-filter decimation: average the input samples that fall into each 8 kHz output sample.
    for (let i = 0; i < input.length; i++) {
      this.acc += input[i];
      this.count++;
      this.position += 1;
      if (this.position >= this.ratio) {
        this.position -= this.ratio;
        this.frame[this.filled++] = this.acc / this.count;
        this.acc = 0; this.count = 0;
        if (this.filled === 160) {
          this.port.postMessage(this.frame.slice(0));
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("phone-line-capture", PhoneLineCapture);
