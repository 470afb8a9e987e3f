"""Feature extraction from your own media into the release layouts (MMSA pickle or MIntRec pickles + TSVs).

    python -m mmfuse_jax.extract --media=clips/ --transcripts=clips.tsv --layout=mintrec --out=data/own \
        --bert_path=pretrained/bert-base-uncased [--audio=sims|general] [--fps=10] [--workers=2]

then ``python train.py --config=configs/media.py:early_fusion,mintrec,data/own --workdir=runs/own`` and
``python predict.py --workdir=runs/own --media=clip.mp4 --text="..."``.

Modules: `decode` (PyAV), `audio` (numpy/scipy frame features), `video` (OpenCV Haar face features),
`settings` (extractor settings, ``features.json``'s core, one file's extraction), `layouts` (writers),
`run` (transcripts, cache, workers, summary), `media` (features for ``predict.py --media``).
Nothing here imports models or training; models, training and data never import this package.
"""
