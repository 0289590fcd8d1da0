"""The contextual two-tower model (torch), its training, registry and evaluation.

Modules (import them directly; this package imports nothing, so it stays cheap):

- ``model.towers``     SequenceEncoder, ContextLayer, UserHead, OnlineTower, ItemTower
- ``model.features``   sequence_events, build_encoder_inputs, RecentEngagements (numpy)
- ``model.tables``     EventLog, PinTable, UserTable, encode_demographics (numpy)
- ``model.batches``    training examples as windows of user histories
- ``model.loss``       in-batch softmax with logQ, mixed negatives, full softmax
- ``model.train``      train_model (no I/O)
- ``model.registry``   versioned directories with sha256 manifests
- ``model.artifacts``  TwoTower, save_model, load_encoder / load_online / load_item_tower
- ``model.protocol``   leave_one_out_split, full_ranking_metrics (model-agnostic)
- ``model.evaluate``   full-ranking evaluation of a TwoTower
- ``model.lake_io``    reading the Parquet lake
- ``model.jobs``       run_train / run_evaluate (what the CLI calls)
"""
