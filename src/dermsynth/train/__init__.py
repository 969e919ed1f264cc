"""Training and prediction: the Groh et al. recipe by default, other backbones as options.

* :class:`dermsynth.config.ClassifierConfig` - every option of a run (one model of the config tree).
* :mod:`~dermsynth.train.backbones` - backbones by name, weights, the recipe head.
* :mod:`~dermsynth.train.model` - :class:`Classifier` (trunk + tail of one network).
* :mod:`~dermsynth.train.datasets` - transforms, the decode-once image pass, the sampler.
* :mod:`~dermsynth.train.features` - the fast path: cached trunk features per image view.
* :mod:`~dermsynth.train.loop` - the training loop shared by both paths.
* :mod:`~dermsynth.train.run` - :func:`train_run`: manifest in, run folder out.
* :mod:`~dermsynth.train.predict` - :func:`predict` and :func:`load_run`.

Imports stay in the submodules (torch is heavy): ``from dermsynth.train.run import train_run``.
"""
