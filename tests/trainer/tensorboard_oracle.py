"""Test oracle for volt's TensorBoardLogger: TensorBoard's own reader on the events file volt wrote.

  tensorboard_oracle.py PATH    load PATH (an events file or a folder) with EventAccumulator and print
                                every scalar as "step<TAB>repr(value)<TAB>tag", tags sorted, steps in order

Exits 1, saying why, when TensorBoard finds no scalars.
"""
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator, SCALARS


def main():
    accumulator = EventAccumulator(sys.argv[1], size_guidance={SCALARS: 0})  # 0: keep every scalar
    accumulator.Reload()
    tags = sorted(accumulator.Tags()[SCALARS])
    if not tags:
        print("TensorBoard read no scalars from", sys.argv[1])
        return 1
    for tag in tags:
        for event in accumulator.Scalars(tag):
            print(f"{event.step}\t{event.value!r}\t{tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
