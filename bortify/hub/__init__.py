"""Hub-ready output: model cards with measured evidence (`card`), release folders and `bortify card`
(`card_stage`), and `bortify push` (`push`), which uploads a release folder with huggingface_hub."""
