"""The metrics' settings: read by the summaries the plugin registers and by the computations (:mod:`.compute`)."""

#: Probability maps are binarised here (PaddleOCR's DB post-processing uses 0.3 on its text maps).
MASK_THRESHOLD = 0.3
#: Embeddings kept for nearest-neighbour agreement (each is a row of floats).
MAX_NEIGHBOUR_ROWS = 4096
#: ``neighbours`` passes a sample when the reference's nearest is among the candidate's this many nearest.
NEIGHBOUR_RANKS = 3
#: A YOLO-style head's detections: class score at least this, greedy NMS at NMS_IOU, matched at MATCH_IOU.
SCORE_THRESHOLD, NMS_IOU, MATCH_IOU, MAX_DETECTIONS = 0.25, 0.45, 0.5, 300
