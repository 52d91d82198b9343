"""DAVS: Zhou et al., "Talking Face Generation by Adversarially Disentangled Audio-Visual
Representation", AAAI 2019 (reference code: Hangz-nju-cuhk/Talking-Face-Generation-DAVS).

A person-ID encoder reads the face; a word-ID encoder reads either the audio (MFCC) or
the lips of a video; the decoder draws the face saying that word. ``networks`` holds the
networks, ``audio`` the SyncNet MFCC front end, ``preprocess`` the face alignment,
``pipeline`` inference and ``train`` training.
"""

