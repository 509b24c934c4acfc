"""Which cases a semi-supervised fine-tuning may use without labels, for one fold (pure).

A fold of nnU-Net's splits_final.json names the labeled training cases and the validation cases.
Every other case of the dataset, and every case of the plugin's unlabeled folder (integration/
unlabeled.py), is unlabeled training data. Validation cases never are: they are what the fold
reports, so they must not influence training, not even through their images.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class FoldCases:
    labeled: list[str]  # the fold's training cases (nnU-Net's 'train')
    validation: list[str]  # the fold's 'val'
    unlabeled_from_dataset: list[str]  # the dataset's other cases, labels ignored
    unlabeled_extra: list[str]  # preprocessed unlabeled folders / imagesTs (ids 'unlabeled__<source>__<case>')

    @property
    def unlabeled(self) -> list[str]:
        return self.unlabeled_from_dataset + self.unlabeled_extra

    def counts(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "validation": len(self.validation),
                "unlabeled_from_dataset": len(self.unlabeled_from_dataset),
                "unlabeled_extra": len(self.unlabeled_extra), "unlabeled": len(self.unlabeled)}

    def to_json(self) -> dict:
        return {"counts": self.counts(), "labeled": self.labeled, "validation": self.validation,
                "unlabeled_from_dataset": self.unlabeled_from_dataset, "unlabeled_extra": self.unlabeled_extra}


def fold_cases(dataset_cases: list[str], train: list[str], validation: list[str],
               extra_unlabeled: list[str] = ()) -> FoldCases:
    """Split the dataset's cases for one fold; ``extra_unlabeled`` are cases outside the dataset.

    Raises ValueError when an extra case has the id of a labeled or validation case (it would be
    used twice, or a validation image would enter training)."""
    held = set(train) | set(validation)
    clash = sorted(set(extra_unlabeled) & held)
    if clash:
        raise ValueError(f"unlabeled case {clash[0]!r} has the id of a training or validation case of this fold")
    return FoldCases(labeled=list(train), validation=list(validation),
                     unlabeled_from_dataset=sorted(c for c in set(dataset_cases) if c not in held),
                     unlabeled_extra=sorted(set(extra_unlabeled)))
