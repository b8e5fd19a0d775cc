// AudioWorklet: mono capture at the device rate -> 16 kHz PCM16 frames for /v1/stream.
// Downsampling averages the input samples that fall in each output sample's span (a box
// filter: enough against aliasing for speech at 44.1/48 kHz), then frames of frameMs are
// posted to the page, which sends them as binary WebSocket messages.
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.ratio = sampleRate / (o.targetRate || 16000);
    this.frame = Math.round((o.targetRate || 16000) * (o.frameMs || 40) / 1000);
    this.out = new Int16Array(this.frame);
    this.filled = 0;
    this.acc = 0;     // sum of input samples for the output sample being built
    this.count = 0;   // how many went in
    this.pos = 0;     // input position within the current output sample's span
  }
  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const input = channels[0];
    for (let i = 0; i < input.length; i++) {
      let s = 0;
      for (let c = 0; c < channels.length; c++) s += channels[c][i];
      this.acc += s / channels.length;
      this.count += 1;
      this.pos += 1;
      if (this.pos >= this.ratio) {
        this.pos -= this.ratio;
        const v = Math.max(-1, Math.min(1, this.acc / this.count));
        this.out[this.filled++] = v < 0 ? v * 0x8000 : v * 0x7fff;
        this.acc = 0;
        this.count = 0;
        if (this.filled === this.frame) {
          this.port.postMessage(this.out.buffer, [this.out.buffer]);
          this.out = new Int16Array(this.frame);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("pcm-capture", PcmCapture);
