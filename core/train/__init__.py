"""Training: callbacks (`callbacks`), optimizer and LR schedules (`schedule`), fine-tuning pretrained parts
(`finetune`), DDP helpers (`distributed`) and progress display (`progress`, `progress_bar`)."""
