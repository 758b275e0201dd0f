"""What a prediction is scored by: the losses it trains on and the metrics it is judged by
(one confusion matrix per split; the ISBI 2012 EM scores)."""
