"""Data: where a dataset's atomic files are found (:mod:`.location`), their checks
(:mod:`.validate`), the KGAT/KGIN text-format converter (:mod:`.convert`), items'
readable names for explanations (:mod:`.item_names`)."""
