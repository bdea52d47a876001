"""Chat text of the `shift` simulator preset: the same categories as the base templates, other words.

None of these phrasings appears in the base templates, and French appears in no training preset,
so a model that memorised the training templates' tokens gains nothing here; one that learned what
a question, a request or praise looks like still can.
"""

from __future__ import annotations

SHIFT_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "reaction": ("KEKW", "pog", "sheesh", "nahhh", "insane play", "oof", "that's wild", "holy", "ez",
                     "deadge", "copium", "ratio"),
        "game": ("try the bow", "heal up first", "there's a secret room", "skip that quest", "upgrade the armor",
                 "you should save", "boss has two phases"),
        "social": ("evening all", "who else is from {place}", "just got here", "yo {friend}", "lurking today",
                   "chat is wild", "long day at work"),
        "question": ("is there a schedule for this week?", "which mouse do you use?", "are you doing a giveaway?",
                     "is this your first playthrough?", "will the vod stay up?", "what rank are you?"),
        "request": ("could you show the build?", "shout out my brother pls", "do the dance again",
                    "try hard mode next", "could you stream {game} sometime", "play the intro song"),
        "praise": ("your content is amazing", "been watching for years", "you always cheer me up",
                   "you deserve way more viewers", "so talented", "love the vibes here"),
    },
    "fr": {
        "reaction": ("mdr", "ptdr", "incroyable", "oh non", "trop fort", "aie", "gg wp", "c'est chaud"),
        "game": ("va à droite", "prends le bouclier", "le boss craint la glace", "t'as raté le coffre"),
        "social": ("salut le chat", "quelqu'un de {place} ?", "bonsoir tout le monde", "coucou {friend}",
                   "je suis de retour"),
        "question": ("le live dure combien de temps ?", "tu joues à quoi après ?", "c'est quoi ton micro ?",
                     "tu streames demain ?"),
        "request": ("tu peux jouer à {game} ?", "dis bonjour à ma soeur", "lis mon message stp",
                    "refais la voix stp"),
        "praise": ("meilleur streamer", "t'es trop fort", "merci pour le live", "super ambiance ce soir"),
    },
    "es": {
        "reaction": ("ajajaj", "qué locura", "nooo way", "brutal", "ay no", "tremendo", "qué crack"),
        "game": ("usa el arco", "cúrate primero", "hay un cuarto secreto", "mejora la armadura"),
        "social": ("buenas a todos", "alguien de {place}", "recién llego", "qué tal {friend}", "aquí mirando"),
        "question": ("hay horario esta semana?", "qué ratón usas?", "vas a hacer sorteo?", "es tu primera vez?"),
        "request": ("muestra la build porfa", "un saludo a mi hermano", "haz el baile otra vez",
                    "juega {game} algún día"),
        "praise": ("tu contenido es genial", "te veo hace años", "siempre me alegras", "mereces más viewers"),
    },
    "id": {
        "reaction": ("anjir", "gokil", "parah", "aduh", "mantul", "ngakak", "edan"),
        "game": ("pakai busur bang", "heal dulu", "ada ruang rahasia", "upgrade armornya"),
        "social": ("malam semua", "ada yang dari {place}", "baru nyampe", "oi {friend}", "nonton aja"),
        "question": ("jadwal minggu ini ada?", "mouse nya apa bang?", "ada giveaway ga?", "pertama kali main?"),
        "request": ("tunjukin buildnya dong", "salam buat abangku", "joget lagi dong", "main {game} kapan kapan"),
        "praise": ("kontennya keren", "udah nonton dari lama", "selalu bikin happy", "pantes viewers banyak"),
    },
}
SHIFT_PAID_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("keep it up {streamer}", "coffee money", "from {place} with love", "play {game} pls", ""),
    "fr": ("courage {streamer} !", "pour le café", "bisous de {place}", "joue à {game}"),
    "es": ("ánimo {streamer}!", "para el café", "desde {place}", "juega {game}"),
    "id": ("gas terus {streamer}!", "buat kopi", "dari {place}", "main {game} bang"),
}
SHIFT_GAMES = ("Hollow Knight", "Terraria", "Valorant", "Dark Souls", "Portal", "Factorio")
SHIFT_EMOJI = ("🤣", "💯", "🥲", "😎", "🫡", "👀", "🙌", "💜")
SHIFT_THANKS = ("tysm {name} for the {what}", "{name} you legend, thanks for the {what}", "appreciate you {name}")
SHIFT_CROWD_REACTIONS = ("legend", "so kind", "{name} W", "💜")
SHIFT_PLACES = ("Lyon", "Lima", "Surabaya", "Ohio", "Montréal", "Bogotá", "Dublin")
