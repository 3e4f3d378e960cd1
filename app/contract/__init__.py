"""The contract shared by training and serving: image preprocessing, the model card's schema, the models folder
layout, the SavedModel's signatures and the scores' meaning. It imports nothing else from `app`, and it is all of
`app` that `training/` may import."""
