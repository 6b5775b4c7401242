"""A Hugging Face Space for any MER model: speech (microphone or file) + transcript -> emotion scores, the focus
plot, and for long recordings an emotion timeline.

    MER_MODEL=outputs/demo/model python examples/space/app.py          # or: python app.py you/mer-demo
    MER_ASR_MODEL=facebook/wav2vec2-base-960h ...                       # optional: transcribe when no text is typed

Everything runs locally (GRADIO_ANALYTICS_ENABLED is switched off); the model loads from a folder or the
Hub cache with trust_remote_code, so the Space needs only transformers, gradio and the model repo.
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile  # noqa: E402
from transformers import pipeline  # noqa: E402

TASK = "multimodal-emotion-recognition"
LONG_SECONDS = 20.0  # longer input gets a timeline (one entry per speech segment) instead of one answer


def load_pipeline(model):
    return pipeline(TASK, model=model, trust_remote_code=True, device=-1)


def focus_figure(focus):
    """Where each token looked in the audio (the last crossmodal layer's focus centres, averaged over heads)."""
    figure, axis = plt.subplots(figsize=(7, 2.6))
    for window in focus:
        axis.scatter(window["token_focus_seconds"], range(len(window["tokens"])), s=18)
        axis.set_yticks(range(len(window["tokens"])), window["tokens"], fontsize=7)
    axis.set_xlabel("time in the audio (s)")
    axis.set_title("focus: where each token attends")
    figure.tight_layout()
    return figure


def timeline_figure(timeline):
    figure, axis = plt.subplots(figsize=(8, 2.6))
    labels = sorted({score["label"] for entry in timeline for score in entry["scores"]})
    for index, label in enumerate(labels):
        points = [(e["start"], e["end"], s["score"]) for e in timeline for s in e["scores"] if s["label"] == label]
        axis.hlines([p[2] for p in points], [p[0] for p in points], [p[1] for p in points], colors=f"C{index}",
                    linewidth=4, label=label)
    axis.set_xlabel("time (s)")
    axis.set_ylabel("probability")
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


def make_analyse(pipe, asr_model=None):
    config = pipe.model.config
    can_focus = config.uses_text and config.uses_audio and config.use_focus_attention

    def analyse(audio_path, transcript):
        if not audio_path:
            raise gr.Error("Record or upload some speech first.")
        transcript = (transcript or "").strip() or None
        seconds = soundfile.info(audio_path).duration
        if seconds > LONG_SECONDS:
            if transcript is not None and asr_model is None:
                raise gr.Error(f"This recording is {seconds:.0f} s long: one transcript cannot be aligned to its "
                               "speech segments. Start the Space with MER_ASR_MODEL set (an ASR model with word "
                               f"timestamps), or upload a clip under {LONG_SECONDS:.0f} s.")
            timeline = pipe(audio_path, timeline=True, asr_model=asr_model)
            rows = pd.DataFrame([{"start": round(e["start"], 2), "end": round(e["end"], 2), "text": e["text"],
                                  "label": e["label"], "score": round(e["score"], 3)} for e in timeline])
            mean = pd.DataFrame([{"emotion": s["label"], "score": s["score"]} for e in timeline for s in e["scores"]])
            mean = mean.groupby("emotion", as_index=False)["score"].mean()
            top = mean.sort_values("score", ascending=False).iloc[0]["emotion"] if len(mean) else ""
            return (top, mean, gr.update(value=None, visible=False), gr.update(value=rows, visible=True),
                    gr.update(value=timeline_figure(timeline) if timeline else None, visible=True))
        options = {"return_focus": True} if can_focus else {}
        if transcript is None:
            if config.uses_text and asr_model is None:
                raise gr.Error("Type the transcript: this model reads the words as well as the voice.")
            options["asr_model"] = asr_model
        result = pipe(audio_path, text=transcript, **options)
        scores = result["scores"] if isinstance(result, dict) else result
        bars = pd.DataFrame([{"emotion": s["label"], "score": s["score"]} for s in scores])
        focus = focus_figure(result["focus"]) if isinstance(result, dict) and "focus" in result else None
        # One answer for a short clip: the timeline parts stay hidden rather than showing an empty table and plot.
        return (scores[0]["label"], bars, gr.update(value=focus, visible=focus is not None),
                gr.update(value=None, visible=False), gr.update(value=None, visible=False))

    return analyse


def build_demo(model, asr_model=None):
    pipe = load_pipeline(model)
    analyse = make_analyse(pipe, asr_model)
    with gr.Blocks(title="Multimodal emotion recognition") as demo:
        gr.Markdown(f"## Emotion from speech and words\nModel: `{model}`. Record or upload speech, type what is "
                    f"said, press **Analyse**. Recordings over {LONG_SECONDS:.0f} s get a timeline.")
        with gr.Row():
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="speech", elem_id="audio")
            transcript = gr.Textbox(label="transcript", placeholder="what is said", elem_id="transcript")
        button = gr.Button("Analyse", variant="primary", elem_id="analyse")
        top = gr.Textbox(label="emotion", interactive=False, elem_id="top-label")
        bars = gr.BarPlot(x="emotion", y="score", y_lim=[0, 1], label="class scores", elem_id="scores")
        focus = gr.Plot(label="focus", elem_id="focus", visible=False)
        rows = gr.Dataframe(label="timeline", elem_id="timeline", visible=False)
        timeline = gr.Plot(label="timeline plot", elem_id="timeline-plot", visible=False)
        button.click(analyse, [audio, transcript], [top, bars, focus, rows, timeline])
    return demo


if __name__ == "__main__":
    # push_space writes model_id.txt beside this file, so a published Space needs no settings.
    model_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_id.txt")
    saved = open(model_file).read().strip() if os.path.exists(model_file) else None
    model = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MER_MODEL") or saved
    if not model:
        sys.exit("Name the model: MER_MODEL=<folder or Hub repo id> python app.py, or python app.py <model>.")
    build_demo(model, os.environ.get("MER_ASR_MODEL")).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
