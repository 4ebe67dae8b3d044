"""The label audit of an epoch: suspect labels, duplicates and outliers of the
training set, found in the saved embeddings of several epochs.

An in-batch method sees a few hundred images at a time; this pipeline keeps every
epoch's embedding of the whole training set on disk, which is what noise-robust
methods build memory banks for (PRISM, Liu et al., CVPR 2021). The audit uses them:

* **Label quality.** Each training image's ``k`` nearest training images (itself
  excluded) vote for their labels, in each of ``epochs`` saved epochs (the audited
  one and others spread back to epoch 1); the votes are pooled, so one epoch's chance
  neighbourhood does not decide, and the epochs before the network memorised a wrong
  label still vote for the true class. ``quality`` is the pooled share of the image's own (given) label,
  ``suggested`` the class with the largest share.
* **Suspects, without the true labels.** The threshold is the data's own, as in
  confident learning (Northcutt et al., JAIR 2021): class ``j``'s threshold is the
  mean share of ``j`` among the images labelled ``j``. An image is a suspect when
  another class than its given one reaches its threshold and beats the given
  class's share, or when its quality is below ``quality_floor`` x its given
  class's threshold (its neighbours spread over other classes, none confidently).
* **Duplicates.** Exact ones (identical stored pixels) and near ones (embedding
  distance at most ``duplicate_ratio`` x the median nearest-neighbour distance of
  the training set), within the training split and from validation to training. A
  validation image that duplicates a training image is leakage: it is flagged.
* **Outliers.** The mean distance to the ``k`` nearest training images over the
  median of that distance: far from everything, their own class included.

The true labels (known when the experiment flipped them, ``[run] label_noise``) are
read only to score the suspects in the summary (``audit/epoch-NNN.json``): precision, recall, F1 and the
AUROC of ``1 - quality`` as a flipped-label detector.
"""
