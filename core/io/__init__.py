"""Everything that reads or writes a model: checkpoints (`checkpoint`), model folders (`model_folder`,
`model_card`), rebuilding a module from an untrusted file (`rebuild`, `hparams`, `jsonio`) and pretrained Hugging
Face parts (`pretrained`). Nothing here imports a name read from a file."""
