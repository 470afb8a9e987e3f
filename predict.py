"""Predict with a trained run: python predict.py --workdir=DIR --input=examples.jsonl [--output=out.jsonl],
or from a media file: python predict.py --workdir=DIR --media=clip.mp4 --text="..." (a run trained on
`python -m mmfuse_jax.extract` output; the clip is processed with the run's recorded settings).

Each input line: {"text": "...", "audio": "a.npy", "video": "v.npy", "id": ...} (audio, video, id
optional; relative .npy paths are read from the input file's folder; {"media": "clip.mp4", "text": ...}
instead of audio/video for a media-trained run). Each output line: the label and
probabilities (or score), the missing modalities and anything truncated. See mmfuse_jax/predictor.py.
"""
from mmfuse_jax.predictor import main

if __name__ == "__main__":
    main()
