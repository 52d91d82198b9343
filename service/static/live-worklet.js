// AudioWorklet processor of the live page: hands the first channel's samples to the page.
// It runs at the AudioContext's rate (16 kHz, what the model takes), 128 samples a call.
"use strict";

class PcmCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
