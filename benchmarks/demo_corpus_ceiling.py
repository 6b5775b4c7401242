"""How far can one modality go on the demo corpus? Text-only vs prosody-only vs both, session 5 held out.

    python benchmarks/demo_corpus_ceiling.py [--test-session 5]

Text: bag-of-words logistic regression. Audio: logistic regression on a dozen prosodic statistics
(f0 level and spread from autocorrelation, energy, duration, voicing, spectral centroid and flatness),
z-normalised per speaker (test speakers are normalised on their own unlabelled utterances, the usual
speaker normalisation in SER). The corpus is designed so each single modality tops out near UA 2/3 and
the union of the two (an oracle that is right when either is) near 100 %; "early fusion" concatenates
both feature sets in one logistic regression, the simplest model that can use both.
"""

import argparse
import io

import numpy as np
import soundfile as sf
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from modeling_mer.data.demo import load_demo

FRAME, HOP = 640, 160  # 40 ms windows, 10 ms hop at 16 kHz
F0_MIN, F0_MAX = 70.0, 400.0


def frame_signal(waveform):
    count = 1 + max(0, len(waveform) - FRAME) // HOP
    index = np.arange(FRAME)[None, :] + HOP * np.arange(count)[:, None]
    return np.pad(waveform, (0, FRAME))[index] * np.hanning(FRAME)


def prosodic_features(waveform, sampling_rate):
    frames = frame_signal(waveform)
    energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)
    active = energy_db > energy_db.max() - 30
    # Autocorrelation through the FFT; the best lag in the 70-400 Hz range gives an f0 estimate.
    spectrum = np.fft.rfft(frames, n=2 * FRAME, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :FRAME]
    autocorr /= autocorr[:, :1] + 1e-10
    low, high = int(sampling_rate / F0_MAX), int(sampling_rate / F0_MIN)
    best_lag = low + np.argmax(autocorr[:, low:high], axis=1)
    voiced = active & (autocorr[np.arange(len(frames)), best_lag] > 0.5)
    f0_semitones = 12 * np.log2(sampling_rate / best_lag[voiced]) if voiced.any() else np.zeros(1)
    power = np.abs(spectrum[active]) ** 2 + 1e-10
    freqs = np.fft.rfftfreq(2 * FRAME, 1 / sampling_rate)
    centroid = (power * freqs).sum(axis=1) / power.sum(axis=1)
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return np.array(
        [
            np.median(f0_semitones),
            f0_semitones.std(),
            np.percentile(f0_semitones, 90) - np.percentile(f0_semitones, 10),
            energy_db[active].mean(),
            energy_db[active].std(),
            energy_db.max(),
            len(waveform) / sampling_rate,
            voiced.mean(),
            active.mean(),
            centroid.mean(),
            np.log(flatness).mean(),
        ]
    )


def normalise_per_speaker(features, speakers):
    normalised = np.empty_like(features)
    for speaker in set(speakers):
        rows = np.array([s == speaker for s in speakers])
        normalised[rows] = StandardScaler().fit_transform(features[rows])
    return normalised


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--test-session", type=int, default=5)
    args = parser.parse_args()

    dataset = load_demo()
    labels = np.array(dataset["label"])
    test = np.array(dataset["session"]) == args.test_session
    audio = []
    for example in dataset["audio"]:
        waveform, sampling_rate = sf.read(io.BytesIO(example["bytes"]))
        audio.append(prosodic_features(waveform, sampling_rate))
    audio = normalise_per_speaker(np.array(audio), dataset["speaker"])

    vectoriser = CountVectorizer(lowercase=True)
    words = vectoriser.fit_transform(np.array(dataset["text"])[~test]).toarray()
    words_test = vectoriser.transform(np.array(dataset["text"])[test]).toarray()

    def fit_predict(train_x, test_x):
        model = LogisticRegression(max_iter=5000, C=1.0)
        return model.fit(train_x, labels[~test]).predict(test_x)

    text_pred = fit_predict(words, words_test)
    audio_pred = fit_predict(audio[~test], audio[test])
    fused_pred = fit_predict(np.hstack([words, audio[~test]]), np.hstack([words_test, audio[test]]))
    truth = labels[test]
    union_pred = np.where(text_pred == truth, text_pred, audio_pred)

    print(f"test session {args.test_session}: {test.sum()} utterances, train {(~test).sum()}")
    print("| model | UA | WA |\n|---|---|---|")
    for name, pred in [
        ("text only (bag of words)", text_pred),
        ("audio only (prosodic stats)", audio_pred),
        ("early fusion (both feature sets)", fused_pred),
        ("union oracle (either right)", union_pred),
    ]:
        print(f"| {name} | {balanced_accuracy_score(truth, pred):.3f} | {np.mean(truth == pred):.3f} |")
    conditions = np.array(dataset["condition"])[test]
    print("\naccuracy per condition (text / audio):")
    for condition in ("neutral", "words", "prosody", "both"):
        rows = conditions == condition
        print(
            f"  {condition:8s} {np.mean(text_pred[rows] == truth[rows]):.2f} / "
            f"{np.mean(audio_pred[rows] == truth[rows]):.2f}"
        )


if __name__ == "__main__":
    main()
