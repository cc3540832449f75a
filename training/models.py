"""The model side of crowdloop: training runs, model versions, predictions, round selections."""
